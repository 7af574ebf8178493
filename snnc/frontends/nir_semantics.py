"""What each NIR producer writes and what it actually simulates (docs/interop.md, "Profiles").

NIR states continuous-time equations; every producer discretizes them its own way, and some write
values that mean something else in their own simulator (Norse's time constants, SpikingJelly's
r = 1/dt). A `Profile` is one producer's discrete rule for every neuron node it writes; the NIR
frontend turns a node into an snnc neuron through `discretize`, `fire_threshold`,
`subtract_amount` and `spikes_per_step`.

Choices a producer does not record in its graph (its reset mechanism, its spike function) are
assumptions: `resolve` takes them from the caller's `assume`, else the producer's default, and
returns a warning line for each assumption that changes the result, naming the option to pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from snnc.errors import InputError
from snnc.ir import MAX_SPIKES_PER_STEP

RESETS = ("zero", "subtract")
SPIKES = ("single", "multi")
ASSUMPTIONS = {"reset": RESETS, "spikes": SPIKES}
PRODUCER_METADATA_KEYS = ("producer", "source", "framework")   # graph metadata naming the producer


@dataclass(frozen=True)
class Profile:
    """One producer's discretization of NIR's neuron nodes.

    fire_rule: '>' or '>='. dt: the step its exporter writes time constants with (None: the graph's
    metadata or NIR's inference; 'r': recovered per node from r, which Rockpool writes as
    tau e^(-dt/tau) / dt). leak: 'euler' (decay dt/tau) or 'exponential' (1 - exp(-dt/tau)).
    tau_scale: how a written tau is read: 'tau', or 'dt' where the exporter wrote dt/tau_inv (Norse),
    so that the true decay per step is dt^2/tau_written. gain: the current's gain into the membrane,
    'r' (NIR: r times the decay) or 'one' (the producer adds its current unscaled and uses r for
    something else). if_gain: 'r dt' (NIR) or 'r' (the IF integrates its input unscaled).
    cuba_input: 'nir' (input scaled by w_in dt/tau_syn, NIR's equation), 'w_in' (added to the
    current as it is) or 'decayed' (added, then decayed with the current in the same step:
    Rockpool). reset: the default reset ('zero' means to v_reset); subtract_at: 'spike' (the
    threshold is subtracted when the neuron fires) or 'next' (at the next step, after the decay:
    snnTorch, Spyx); cuba_subtracts_twice: Spyx's CuBaLIF subtracts the threshold before and after
    its decay. recorded_reset: the graph's v_reset says which reset the neuron had (no assumption to
    warn about). output_delay: steps by which every spiking population's spikes reach the layers it
    feeds (Spyx computes its spikes from the previous state; slayer's delay_shift).
    weights_transposed: Linear/Affine weights stored (in, out). threshold_written: False where the
    exporter writes 1 whatever the threshold (an assumption to warn about). refused: (node type,
    reset, what the producer does) combinations snnc's neuron cannot express. multi_spike: the
    producer's own name for firing several spikes per step.
    """

    name: str
    producer: str
    fire_rule: str
    dt: Optional[float] | str
    dt_assumed: bool
    leak: str
    reset: str
    spikes: str = "single"
    subtract_at: str = "spike"
    tau_scale: str = "tau"
    gain: str = "r"
    if_gain: str = "r dt"
    cuba_input: str = "nir"
    cuba_subtracts_twice: bool = False
    recorded_reset: bool = False
    output_delay: int = 0
    weights_transposed: bool = False
    threshold_written: bool = True
    refused: tuple[tuple[str, str, str], ...] = ()
    multi_spike: str = "MultiSpike"      # the producer's name for several spikes per step
    notes: tuple[str, ...] = ()


PROFILES = {profile.name: profile for profile in (
    Profile("nir", "NIR's literal reading", ">", None, False, "euler", "zero", recorded_reset=True,
            notes=("Forward Euler at dt; v > v_threshold; reset to v_reset; one spike per step",)),
    Profile("snntorch", "snnTorch 1.0", ">", 1e-4, False, "euler", "subtract", subtract_at="next",
            refused=(("CubaLIF", "zero", "its Synaptic with reset_mechanism='zero' (and its default "
                      "reset_delay) holds the membrane at 0 for the whole step after a spike, dropping that "
                      "step's input (with reset_delay=False it is NIR's literal reset: --nir-semantics nir)"),),
            notes=("its exporters write every time constant with dt = 1e-4 (beta = 1 - dt/tau)",
                   "reset_mechanism 'subtract' (its default) subtracts the threshold one step late",
                   "both resets are written as v_reset = 0")),
    Profile("norse", "Norse 1.1", ">", 1e-3, True, "euler", "zero", tau_scale="dt", if_gain="r",
            cuba_input="w_in", recorded_reset=True,
            notes=("its exporter writes tau = dt * tau (its tau_mem_inv inverted with dt = 1e-3)",
                   "LIFCell adds its input to the current unscaled (written w_in = 1)",
                   "IAFCell integrates its input unscaled, whatever dt")),
    Profile("sinabs", "Sinabs 3.1", ">=", 1.0, False, "exponential", "subtract", spikes="multi",
            notes=("time constants in steps, decay exp(-1/tau), input scaled by 1 - exp(-1/tau) "
                   "(norm_input, its default)",
                   "fires on v >= threshold; defaults MultiSpike and MembraneSubtract, neither written")),
    Profile("spikingjelly", "SpikingJelly", ">=", 1e-4, False, "euler", "zero",
            notes=("its exporter writes tau = tau_steps * dt and IF r = 1/dt with dt = 1e-4",
                   "fires on v >= threshold; hard reset written as v_reset, soft reset "
                   "(v_reset=None) exported by earlier versions with the same node")),
    Profile("rockpool", "Rockpool 3.1", ">=", "r", False, "exponential", "subtract", spikes="multi", recorded_reset=True,
            gain="one", if_gain="r", cuba_input="decayed", multi_spike="max_spikes_per_dt > 1",
            notes=("time constants in seconds; r = tau e^(-dt/tau) / dt gives dt back (Lambert W)",
                   "exponential decays; the input joins the current and decays with it in the same step",
                   "fires floor(v / threshold) spikes when v >= threshold (several per step) and subtracts "
                   "them; its bias and recurrent weights are not written")),
    Profile("spyx", "Spyx 0.1", ">", 1.0, False, "euler", "subtract", subtract_at="next", gain="one", recorded_reset=True,
            cuba_input="w_in", cuba_subtracts_twice=True, output_delay=1, weights_transposed=True,
            threshold_written=False,
            notes=("beta = 1 - dt/tau with dt = 1; the membrane adds its input unscaled (r holds beta)",
                   "a spike is decided from the state before the step: one step of output delay per layer; "
                   "the threshold is subtracted at the next step, twice in CuBaLIF (before and after the decay)",
                   "weights are written as stored, (in, out); the threshold is written as 1 whatever it was")),
    Profile("lava-dl", "lava-dl", ">", 1.0, False, "euler", "zero", recorded_reset=True, output_delay=1,
            notes=("lava-dl 0.6.0 writes no NIR; this is the reading NIR's Lava importer assumes: Euler at "
                   "dt = 1, v > threshold, reset to zero",
                   "slayer blocks shift their output by one step (delay_shift, its default)")),
)}


@dataclass
class Semantics:
    """The rules one import uses: a profile, where it came from, and the choices assumed."""

    profile: Profile
    source: str                                   # 'given', 'graph metadata' or 'default'
    reset: str
    spikes: str
    assumed: dict = field(default_factory=dict)   # choice -> value, where nothing recorded it
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """The manifest's record of what the import assumed."""
        return {"profile": self.profile.name, "source": self.source, "reset": self.reset,
                "spikes": self.spikes, "fire_rule": self.profile.fire_rule, "rules": list(self.profile.notes),
                "assumed": dict(self.assumed), "warnings": list(self.warnings)}


def _named_in_metadata(metadata) -> Optional[str]:
    if not isinstance(metadata, dict):
        return None
    for key in PRODUCER_METADATA_KEYS:
        value = metadata.get(key)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str) and value.strip().lower() in PROFILES:
            return value.strip().lower()
    return None


def _close(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=np.float64), b, rtol=1e-5, atol=0.0))


def look_alike(nodes: dict) -> Optional[str]:
    """The producer whose exporter's signature the graph carries (node names, the values its
    exporter derives), for the hint in the warning only: it is never applied without the flag."""
    kinds = {key: type(node).__name__ for key, node in nodes.items()}
    if any(re.fullmatch(r"\d+_\w+Torch", key) for key in nodes):
        return "rockpool"
    for key, node in nodes.items():
        kind = kinds[key]
        if kind == "IF" and _close(node.r, 1e4):
            return "spikingjelly"
        if kind in ("LIF", "CubaLIF"):
            tau = node.tau if kind == "LIF" else node.tau_mem
            if _close(node.r, tau / 1e-4):
                return "snntorch"
            if _close(node.r, 1.0) and float(np.min(tau)) < 1e-4:
                return "norse"
            if _close(node.r, 1.0 - 1.0 / np.asarray(tau)) and _close(node.v_threshold, 1.0):
                return "spyx"
            if _close(node.r, 1.0) and float(np.min(tau)) > 1.0:
                return "sinabs"
    return None


def resolve(semantics: Optional[str], assume: Optional[dict], graph_metadata, has_spiking: bool,
            has_leak: bool, own_export: bool, look_alike: Optional[str] = None) -> Semantics:
    """The semantics of one import: `semantics` (a profile name) or the producer the graph's
    metadata names, else NIR's literal reading (the warning names the producer the graph looks
    like, if any); `assume` overrides the unrecorded choices."""
    assume = dict(assume or {})
    for key, value in assume.items():
        if key not in ASSUMPTIONS or value not in ASSUMPTIONS[key]:
            choices = ", ".join(f"{k}={'|'.join(v)}" for k, v in ASSUMPTIONS.items())
            raise InputError(f"--nir-assume {key}={value} is not understood; choices: {choices}")
    named = _named_in_metadata(graph_metadata)
    if semantics is not None:
        if semantics not in PROFILES:
            raise InputError(f"--nir-semantics {semantics!r} is not one of {', '.join(PROFILES)}")
        source = "given"
    elif named is not None:
        semantics, source = named, "graph metadata"
    else:
        semantics, source = "nir", "default"
    profile = PROFILES[semantics]
    result = Semantics(profile, source, reset=assume.get("reset", profile.reset),
                       spikes=assume.get("spikes", profile.spikes))
    if not has_spiking or own_export:
        return result
    if source == "default":
        hint = (f" (it looks like {PROFILES[look_alike].producer}'s: --nir-semantics {look_alike})"
                if look_alike else "")
        result.warnings.append(
            "the NIR graph does not name its producer: it is read with NIR's literal semantics (v > v_threshold, "
            "reset to v_reset, one spike per step, Euler steps); snnTorch, Sinabs, SpikingJelly and Norse "
            f"networks compute otherwise: pass --nir-semantics NAME{hint}")
        return result
    if "reset" not in assume and not profile.recorded_reset:
        other = [r for r in RESETS if r != result.reset][0]
        result.assumed["reset"] = result.reset
        result.warnings.append(f"{profile.producer} does not write which reset its neurons use: assumed "
                               f"'{result.reset}' (its default); pass --nir-assume reset={other} otherwise")
    if "spikes" not in assume and profile.spikes != "single":
        result.assumed["spikes"] = result.spikes
        result.warnings.append(f"{profile.producer} does not write its spike function: assumed several spikes per "
                               f"step ({profile.multi_spike}, its default; at most {MAX_SPIKES_PER_STEP}); pass "
                               f"--nir-assume spikes=single otherwise")
    if not profile.threshold_written:
        result.assumed["threshold"] = "as written"
        result.warnings.append(f"{profile.producer} writes every threshold as 1: the written thresholds are "
                               f"used; scale the weights (or rewrite the graph) if the network had another")
    if has_leak and profile.dt_assumed:
        result.assumed["dt"] = profile.dt
        result.warnings.append(f"{profile.producer} does not write its time step: assumed its exporter's "
                               f"default dt = {profile.dt:g}; pass --dt otherwise")
    return result


@dataclass
class Discrete:
    """One neuron node in snnc's discrete form: per-step membrane decay (fraction lost), the gain
    of the current into the membrane, the current's decay and the scale of the synaptic input."""

    v_decay: object
    gain: object
    u_decay: object = 1.0
    input_scale: object = 1.0


def _node_dt(profile: Profile, params: dict, dt: Optional[float], key: str, resolution: float):
    """The step of one node: `dt`, or where there is none (Rockpool) recovered from
    r = tau e^(-x) / x, x = dt/tau, as x = W0(1/r), rounded to the digits that r's precision
    (`resolution`) carries."""
    if dt is not None:
        return dt
    from scipy.special import lambertw

    tau = params.get("tau", params.get("tau_mem"))
    steps = np.real(lambertw(1.0 / params["r"])) * tau
    first = float(steps.ravel()[0])
    if not np.all(np.isfinite(steps)) or first <= 0 or np.any(np.abs(steps - first) > 8 * resolution * first):
        raise InputError(f"NIR node '{key}': the time step recovered from r (Rockpool's r = tau e^(-dt/tau)/dt) "
                         f"is not one positive number; pass --dt")
    return _simplest(first, resolution)


def _simplest(value: float, resolution: float) -> float:
    """The simplest number that `value`, known to `resolution` relative, can be: a power of two,
    else the one with the fewest decimal digits (a time step such as 1/1024 or 1e-3 comes back
    exactly, not as its float32 rounding)."""
    power = 2.0 ** round(np.log2(value))
    candidates = [power] + [float(f"{value:.{digits}g}") for digits in range(1, 17)]
    return next(c for c in candidates if abs(c - value) <= 4 * resolution * value)


def _decay(profile: Profile, tau, dt: float):
    tau = np.asarray(tau, dtype=np.float64)
    step = dt * dt if profile.tau_scale == "dt" else dt
    with np.errstate(divide="ignore", invalid="ignore"):
        if profile.leak == "exponential":   # 1 - a as the producers form it: snnc keeps 1 - (1 - a) = a
            return 1.0 - np.exp(-step / tau)
        return step / tau


def discretize(profile: Profile, kind: str, params: dict, dt: float, key: str = "",
               resolution: float = 1e-15) -> Discrete:
    """The discrete form of a NIR neuron node (kind: LIF, LI, CubaLIF, CubaLI, IF, I, Threshold)
    under `profile`; params holds the node's arrays (tau, r, tau_mem, tau_syn, w_in), broadcast;
    resolution: the relative precision of the file's numbers (float32: 1e-6)."""
    if kind in ("LIF", "LI", "CubaLIF", "CubaLI"):
        dt = _node_dt(profile, params, dt, key, resolution)
        decay = _decay(profile, params["tau"] if kind in ("LIF", "LI") else params["tau_mem"], dt)
        gain = params["r"] * decay if profile.gain == "r" else np.ones_like(decay)
        if kind in ("LIF", "LI"):
            return Discrete(decay, gain)
        syn_decay = _decay(profile, params["tau_syn"], dt)
        scale = {"nir": params["w_in"] * syn_decay, "w_in": params["w_in"],
                 "decayed": params["w_in"] * (1.0 - syn_decay)}[profile.cuba_input]
        return Discrete(decay, gain, syn_decay, scale)
    if kind in ("IF", "I"):
        gain = params["r"] * dt if profile.if_gain == "r dt" else params["r"]
        return Discrete(np.zeros_like(params["r"]), gain)
    if kind == "Threshold":
        return Discrete(np.ones_like(params["threshold"]), np.ones_like(params["threshold"]))
    raise InputError(f"{kind} is not a neuron")   # pragma: no cover - callers pass neuron kinds


def fire_threshold(profile: Profile, threshold):
    """snnc fires on H >= threshold: under '>' the threshold becomes the next float64 above the
    written one, the same decision for every float64 membrane value."""
    threshold = np.asarray(threshold, dtype=np.float64)
    return np.nextafter(threshold, np.inf) if profile.fire_rule == ">" else threshold


def subtract_amount(semantics: Semantics, key: str, kind: str, threshold, v_decay: float):
    """What a soft reset subtracts from snnc's membrane after a spike. At the spike it is the
    threshold; where the producer subtracts it at the next step after the decay (snnTorch, Spyx),
    it is threshold / (1 - v_decay), which the next step's decay brings back to the threshold;
    Spyx's CuBaLIF subtracts (1 + beta) thresholds in all."""
    profile = semantics.profile
    if profile.subtract_at == "spike":
        return threshold
    keep = 1.0 - v_decay
    if profile.cuba_subtracts_twice and kind == "CubaLIF":
        threshold = threshold * (1.0 + keep)
    if keep <= 0.0:
        raise InputError(f"NIR node '{key}': {semantics.profile.producer} subtracts the threshold at the step "
                         f"after a spike, which a neuron without memory (beta = 0) cannot express in snnc")
    return threshold / keep


def spikes_per_step(semantics: Semantics, key: str, kind: str) -> int:
    """The most spikes a neuron of this node fires in one step (snnc's Neuron.max_spikes): 1, or
    MAX_SPIKES_PER_STEP where the producer fires several (its count is capped there, far above
    what a step's membrane reaches in practice); refuses a profile's refused combinations."""
    for refused_kind, reset, why in semantics.profile.refused:
        if kind == refused_kind and semantics.reset == reset:
            raise InputError(f"NIR node '{key}' ({kind}): {semantics.profile.producer}: {why}, which snnc does "
                             f"not run; --nir-assume reset={reset} cannot be imported")
    return MAX_SPIKES_PER_STEP if semantics.spikes == "multi" else 1