"""Quantization to a target's fixed point, and the static bound analysis.

Every node output is an integer tensor with a known real value per unit (`unit`): 1 for spikes,
the encoding scale for pixels, k*k times less for a sum pool. For each neuron population and each
output channel c we pick an activation scale s_c (real current per unit of synaptic input) so that
the largest weight uses the target's weight range, then express every neuron parameter in units of
the membrane register, s_c / 2^activation_shift. Integer thresholds are exact for the integer rule:
v >= theta  <=>  v >= ceil(theta) and v > ceil(theta) - 1. A node's recurrent weights carry spikes
(unit 1) into the same current: they are counted in the scale choice and the bounds, and quantized
with the same per-channel scale and rounding as its feed-forward weights.
"""
from __future__ import annotations

import math

import numpy as np

from snnc import encoding as units_of
from snnc import fixedpoint
from snnc.errors import DesignRuleError, InputError
from snnc.ir import Network, Node
from snnc.passes.fold import _per_channel, synaptic_inputs
from snnc.targets import Target


def _weight_limit(arithmetic: dict) -> int:
    return 2 ** (arithmetic["weight_bits"] - 1) - 1


def _state_limit(arithmetic: dict) -> int:
    return fixedpoint.register_limit(arithmetic["state_bits"])


def _activation_bound(synapses: list[Node], weights: list[np.ndarray], in_max: list[int]) -> np.ndarray:
    """Per output channel, the largest |synaptic input| one step can bring (all inputs at max)."""
    positive = sum(np.clip(w, 0, None).reshape(w.shape[0], -1).sum(1) * m for w, m in zip(weights, in_max))
    negative = sum(np.clip(-w, 0, None).reshape(w.shape[0], -1).sum(1) * m for w, m in zip(weights, in_max))
    return np.maximum(positive, negative)


def recurrent_sums(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron (flattened), the largest positive and negative recurrent input one step can
    bring (every neuron of the population firing its most spikes, max_spikes): the row sums of
    the positive and of the negative parts of node.recurrent times that; zeros without recurrent
    weights."""
    if node.recurrent is None:
        zeros = np.zeros(math.prod(node.shape))
        return zeros, zeros
    recurrent = np.asarray(node.recurrent, dtype=np.float64) * node.neuron.max_spikes
    return np.clip(recurrent, 0, None).sum(1), np.clip(-recurrent, 0, None).sum(1)


def _recurrent_by_channel(node: Node, values: np.ndarray) -> np.ndarray:
    """Per output channel, the largest of a per-neuron (flattened, C-order) quantity."""
    return values.reshape(node.shape[0], -1).max(1)


def _neuron_scale_floor(node: Node, arithmetic: dict) -> np.ndarray:
    """Per channel, the smallest activation scale at which the neuron's parameters fit their registers.

    Thresholds, initial states and reset amounts must fit half the state range (leaving room for
    the membrane to pass the threshold), biases the largest mant << exp.
    """
    n, shift = node.neuron, arithmetic["activation_shift"]
    channels = node.shape[0]
    per_channel = lambda x: np.abs(np.asarray(x, dtype=np.float64)).reshape(channels, -1).max(1)  # noqa: E731
    state_room = (_state_limit(arithmetic) // 2) / 2 ** shift
    bias_room = ((2 ** (arithmetic["bias_mant_bits"] - 1) - 1) << (2 ** arithmetic["bias_exp_bits"] - 1)) / 2 ** shift
    floor = np.maximum(per_channel(n.initial_state) / state_room, per_channel(n.bias) / bias_room)
    for values in (n.threshold, n.reset_amount):
        if values is not None:
            floor = np.maximum(floor, per_channel(values) / state_room)
    return floor


def _choose_scales(node, synapses, in_units, in_max, arithmetic) -> np.ndarray:
    """Per-channel activation scale: the full weight range, coarsened only as far as needed for
    one step's input to fit the current register and the neuron's parameters theirs."""
    w_limit = _weight_limit(arithmetic)
    real = [syn.weight * unit for syn, unit in zip(synapses, in_units)]
    largest = np.max([np.abs(w).reshape(w.shape[0], -1).max(1) for w in real], axis=0)
    if node.recurrent is not None:   # spikes: one unit is 1
        largest = np.maximum(largest, _recurrent_by_channel(node, np.abs(node.recurrent).max(1)))
    scale = np.maximum(largest / w_limit, _neuron_scale_floor(node, arithmetic))
    scale = np.where(scale > 0, scale, 1.0)
    u_room = _state_limit(arithmetic) >> arithmetic["activation_shift"]
    bound = _activation_bound(synapses, [w / _per_channel(scale, w.shape) for w in real], in_max)
    bound = bound + _recurrent_by_channel(node, np.maximum(*recurrent_sums(node))) / scale
    return scale * np.maximum(1.0, bound / u_room)


def _bias_representable(name: str, bias: np.ndarray, arithmetic: dict) -> np.ndarray:
    """Round a bias to mant << exp with the target's mantissa and exponent widths."""
    mant_limit = 2 ** (arithmetic["bias_mant_bits"] - 1) - 1
    max_exp = 2 ** arithmetic["bias_exp_bits"] - 1
    magnitude = np.abs(bias)
    with np.errstate(divide="ignore"):
        needed = np.where(magnitude > mant_limit, np.ceil(np.log2(magnitude / mant_limit)), 0)
    _check_fits(name, "bias exponent", needed, max_exp)
    step = 2.0 ** needed
    return (np.clip(np.round(bias / step), -mant_limit - 1, mant_limit) * step).astype(np.int64)


def _threshold_integer(theta: np.ndarray, arithmetic: dict) -> np.ndarray:
    """The integer register for the rule `v >= theta` (real theta, integer v) under the target's rule."""
    exact = np.ceil(theta - 1e-9 * np.maximum(1.0, np.abs(theta)))  # tolerate float folding noise
    register = exact - fixedpoint.fire_offset(arithmetic["fire_rule"])   # fires at v >= exact
    step = 2 ** arithmetic["threshold_shift"]
    return (np.round(register / step) * step).astype(np.int64)


def _check_fits(name: str, field: str, values: np.ndarray, limit: int) -> None:
    worst = int(np.max(np.abs(values))) if values.size else 0
    if worst > limit:
        raise DesignRuleError(f"layer '{name}': {field} needs {worst}, above the target's limit {limit}")


def _quantize_neuron(node: Node, scale: np.ndarray, arithmetic: dict) -> None:
    """Express the float neuron in membrane units of s_c / 2^shift, in place."""
    n = node.neuron
    unit = _per_channel(scale / 2 ** arithmetic["activation_shift"], node.shape)
    state_limit = _state_limit(arithmetic)
    n.bias = _bias_representable(node.name, n.bias / unit, arithmetic)
    n.initial_state = np.round(n.initial_state / unit).astype(np.int64)
    _check_fits(node.name, "initial state", n.initial_state, state_limit)
    if n.kind == "spiking":
        if n.reset not in arithmetic["reset_modes"]:
            raise DesignRuleError(f"layer '{node.name}': {n.reset} reset is not supported by the target "
                                  f"(it offers {', '.join(arithmetic['reset_modes'])})")
        n.threshold = _threshold_integer(n.threshold / unit, arithmetic)
        thr_limit = (2 ** arithmetic["threshold_mant_bits"] - 1) << arithmetic["threshold_shift"]
        _check_fits(node.name, "threshold", n.threshold, min(thr_limit, state_limit))
        if np.any(n.threshold < 0):
            raise DesignRuleError(f"layer '{node.name}': negative threshold after folding")
        if n.reset == "soft":
            n.reset_amount = np.round(n.reset_amount / unit).astype(np.int64)
            _check_fits(node.name, "reset amount", n.reset_amount, state_limit)
    n.v_decay = fixedpoint.voltage_decay_register(n.v_decay, arithmetic["decay_bits"])
    n.u_decay = fixedpoint.current_decay_register(n.u_decay, arithmetic["decay_bits"])
    n.input_gain, n.mpr = 1.0, False
    node.scale = np.asarray(scale, dtype=np.float64)


def _integer_weights(real: np.ndarray, scale: np.ndarray, w_limit: int) -> np.ndarray:
    """Real weights [C, ...] (real current per unit of input) in units of the per-output-channel
    activation scale: rounded to nearest, clipped to the weight range."""
    per = scale.reshape((-1,) + (1,) * (real.ndim - 1))
    return np.clip(np.round(real / per), -w_limit, w_limit).astype(np.int64)


def quantize(net: Network, target: Target) -> Network:
    """Fixed-point network for `target` from a folded float network (run passes.fold_all first)."""
    arithmetic = dict(target.arithmetic, kind="fixed")
    out = net.copy()
    unit: dict[str, float] = {}     # real value of one integer unit of each node's output
    int_max: dict[str, int] = {}    # largest integer a node's output can take
    w_limit = _weight_limit(arithmetic)
    for node in out.nodes:
        if node.bn is not None or (node.neuron is not None and (node.neuron.mpr or node.neuron.input_gain != 1.0)):
            raise ValueError(f"node '{node.name}': fold the network before quantizing")
        if node.op == "input":
            unit[node.name], int_max[node.name] = out.encoding["scale"], out.encoding["max"]
        elif node.op == "avgpool":
            k = node.attrs["kernel"]
            node.op = "sumpool"
            unit[node.name] = unit[node.inputs[0]] / (k * k)
            int_max[node.name] = int_max[node.inputs[0]] * k * k
        elif node.op in ("sumpool", "flatten"):
            factor = node.attrs["kernel"] ** 2 if node.op == "sumpool" else 1
            unit[node.name], int_max[node.name] = unit[node.inputs[0]], int_max[node.inputs[0]] * factor
        elif node.op == "add" and node.neuron is None:
            units = {unit[name] for name in node.inputs}
            if len(units) != 1:
                raise DesignRuleError(f"layer '{node.name}': adds tensors of different scales {sorted(units)}")
            unit[node.name], int_max[node.name] = units.pop(), sum(int_max[name] for name in node.inputs)
        if node.neuron is None:
            continue
        synapses = synaptic_inputs(out, node)
        in_units = [unit[syn.inputs[0]] for syn in synapses]
        in_max = [int_max[syn.inputs[0]] for syn in synapses]
        scale = _choose_scales(node, synapses, in_units, in_max, arithmetic)
        if node.neuron.kind == "integrator":  # class scores are compared with each other: one scale
            scale = np.full_like(scale, scale.max())
        for syn, in_unit in zip(synapses, in_units):
            syn.weight = _integer_weights(syn.weight * in_unit, scale, w_limit)
            if syn is not node:
                syn.scale = np.asarray(scale, dtype=np.float64)
        if node.recurrent is not None:   # rows by output channel, C-order
            rows = node.recurrent.reshape(node.shape[0], -1, node.recurrent.shape[1])
            node.recurrent = _integer_weights(rows, scale, w_limit).reshape(node.recurrent.shape)
        _quantize_neuron(node, scale, arithmetic)
        unit[node.name], int_max[node.name] = 1.0, node.neuron.max_spikes
    out.arithmetic = arithmetic
    out.metadata = dict(out.metadata, target=target.name)
    return out


def largest_outputs(net: Network) -> dict[str, int]:
    """The largest integer each node of a fixed network can output (spikes 1, or max_spikes of a
    multi-spike population, the magnitude of a sigma-delta message, pixels 255, pooled and SEW-added counts their sums). A synapse without
    neuron outputs a current, not a value any synapse reads: it gets 0."""
    largest: dict[str, int] = {}
    for node in net.nodes:
        if node.op == "input":
            largest[node.name] = units_of.unit_magnitude(net.encoding)
        elif node.neuron is not None and node.neuron.kind == "sigma_delta":
            # |delta| < 2^(state_bits + 1) while sigma and act fit the registers (overflow is counted)
            largest[node.name] = 1 << max(0, int(net.arithmetic["state_bits"]) + 1 - node.neuron.message_shift)
        elif node.neuron is not None:
            largest[node.name] = int(node.neuron.max_spikes)
        elif node.op == "sumpool":
            largest[node.name] = largest[node.inputs[0]] * node.attrs["kernel"] ** 2
        elif node.op == "add":
            largest[node.name] = sum(largest[name] for name in node.inputs)
        elif node.op in ("flatten", "avgpool"):
            largest[node.name] = largest[node.inputs[0]]
        else:
            largest[node.name] = 0
    return largest


EXACT_STEPS = 1024   # bound_analysis iterates up to this many steps one by one, then a closed form


def _geometric_sum(keep: float, steps: int) -> float:
    """sum of keep**i for i < steps (keep in [0, 1])."""
    return float(steps) if keep >= 1.0 else (1.0 - keep ** steps) / (1.0 - keep)


def _affine_fixed_point(keep: float, drive: np.ndarray) -> np.ndarray:
    """The fixed point of w -> keep * w + drive; for keep = 1, -inf where every w is post-fixed
    (drive <= 0) and +inf where none is (drive > 0)."""
    if keep < 1.0:
        return drive / (1.0 - keep)
    return np.where(drive > 0, np.inf, -np.inf)


def _upper_orbit_bound(w0, keep: float, drive, reset: str, threshold, reset_amount, steps: int) -> np.ndarray:
    """An upper bound on every w_k, 0 <= k <= steps, of w_k = R(keep * w_{k-1} + drive): a
    post-fixed point f >= w0 of that map (G(f) <= f, so w_k <= f for every k by induction, G
    being nondecreasing), or, where none exists, a bound growing linearly with `steps`."""
    fixed = _affine_fixed_point(keep, drive)
    if reset == "hard":   # R(p) = max(min(p, theta), 0); f >= 0 and (f >= theta or f >= fixed) suffice
        return np.maximum(w0, np.minimum(np.maximum(fixed, 0.0), np.maximum(threshold, 0.0)))
    if reset == "soft":   # R(p) = max(min(p, theta), p - r); f >= drained and min(theta, fixed) suffice
        bound = np.maximum(w0, np.maximum(_affine_fixed_point(keep, drive - reset_amount),
                                          np.minimum(threshold, fixed)))
        # none only where keep = 1 and drive > r: w_k <= max(w0, theta) + k (drive - r)
        return np.where(np.isinf(bound), np.maximum(w0, threshold) + steps * (drive - reset_amount), bound)
    bound = np.maximum(w0, fixed)   # no reset: affine, w_k = w0 + k drive where keep = 1 and drive > 0
    return np.where(np.isinf(bound), w0 + steps * drive, bound)


def _check_keeps(node: Node, keeps: tuple[float, float]) -> None:
    if not all(0.0 <= keep <= 1.0 for keep in keeps):
        raise InputError(f"layer '{node.name}': decay registers du={node.neuron.u_decay}, "
                         f"dv={node.neuron.v_decay} keep {keeps[0]:.4g} and {keeps[1]:.4g} of u and v, "
                         "outside [0, 1]")


def bound_analysis(net: Network, exact_steps: int = EXACT_STEPS) -> list[dict]:
    """Worst-case register ranges of a fixed network over its T steps, before anything runs.

    Interval arithmetic on reals: every synaptic input at its extreme (recurrent weights with every
    neuron of the population spiking: recurrent_sums), per channel an upper and a
    lower bound of u and v, decays as the exact fractions keep/unit (Loihi's truncation toward zero
    only shrinks magnitudes), the reset applied to the upper bound of v. The first min(T,
    exact_steps) steps are iterated one by one; the rest in closed form (docs/semantics.md,
    section 3), so T = 10^9 costs what T = exact_steps does. Why the closed form is still a sound
    bound over steps exact_steps + 1 .. T:

    - u: with u_0 = 0 and a constant extreme drive A (A_hi >= 0, A_lo <= 0), u_t = A * sum_{i<t}
      keep_u^i, monotone in t: |u_t| <= |A| * sum_{i<T} keep_u^i for every t <= T (exact, not a bound).
    - v, upper side: u_t <= U = A_hi * sum_{i<T} keep_u^i for t <= T, and the update
      G(w) = R(keep_v * w + U + bias) (R the reset: hard max(min(p, theta), 0), soft
      max(min(p, theta), p - r), none p) is nondecreasing in w and in u. So w_t, the bound with U
      in place of u_t started from the iterated bound, is above v's bound at every step, and any f
      >= w_0 with G(f) <= f bounds every w_t (induction: w_{t+1} = G(w_t) <= G(f) <= f);
      _upper_orbit_bound builds such an f, or where G has none (keep_v = 1 and a drive that no reset
      removes) a bound linear in the steps left. The pre-reset membrane keep_v * w + U + bias is
      then at most keep_v * f + U + bias.
    - v, lower side (no reset acts on it): z_t = keep_v * z_{t-1} + U_lo + bias_lo is an affine
      recurrence, so z_t is monotone in t and its extremes over the steps left are its two
      endpoints, both in closed form.
    Returns one entry per neuron layer with the bounds and `overflow` flags.
    """
    arithmetic = net.arithmetic
    limit = _state_limit(arithmetic)
    decay_bits, unit = arithmetic["decay_bits"], fixedpoint.decay_unit(arithmetic["decay_bits"])
    int_max = largest_outputs(net)
    iterated = min(net.T, exact_steps)
    report = []
    for node in net.nodes:
        if node.neuron is None:
            continue
        synapses = synaptic_inputs(net, node)
        weights = [syn.weight.reshape(syn.weight.shape[0], -1) for syn in synapses]
        in_max = [int_max[syn.inputs[0]] for syn in synapses]
        positive, negative = (_recurrent_by_channel(node, sums) for sums in recurrent_sums(node))
        n = node.neuron
        shift = fixedpoint.input_shift(n.input_shift, arithmetic["activation_shift"])
        a_hi = (sum(np.clip(w, 0, None).sum(1) * m for w, m in zip(weights, in_max)) + positive) * 2.0 ** shift
        a_lo = -(sum(np.clip(-w, 0, None).sum(1) * m for w, m in zip(weights, in_max)) + negative) * 2.0 ** shift
        channels = node.shape[0]
        per_channel = lambda x: np.asarray(x).reshape(channels, -1)  # noqa: E731
        bias_hi, bias_lo = per_channel(n.bias).max(1), per_channel(n.bias).min(1)
        start_hi = per_channel(n.initial_state).max(1).astype(np.float64)
        start_lo = per_channel(n.initial_state).min(1).astype(np.float64)
        if n.kind == "sigma_delta":   # u: sigma (kept whole, or not at all), v: act = relu?(sigma + bias)
            keep_u, keep_v = float(n.accumulate), 0.0
            (u_hi, u_lo), v_hi, v_lo = (start_hi, start_lo), 0.0, 0.0
        else:
            keep_u = fixedpoint.current_keep(n.u_decay, decay_bits) / unit
            keep_v = fixedpoint.voltage_keep(n.v_decay, decay_bits) / unit
            _check_keeps(node, (keep_u, keep_v))
            u_hi = u_lo = 0.0
            v_hi, v_lo = start_hi, start_lo
        reset = n.reset if n.kind == "spiking" else "none"
        thr = per_channel(n.threshold).max(1) if reset != "none" else None
        reset_min = per_channel(n.reset_amount).min(1) if reset == "soft" else None
        worst_u = worst_v = 0.0
        for _ in range(iterated):
            u_hi, u_lo = keep_u * u_hi + a_hi, keep_u * u_lo + a_lo
            v_hi, v_lo = keep_v * v_hi + u_hi + bias_hi, keep_v * v_lo + u_lo + bias_lo
            worst_u = max(worst_u, float(np.max(np.maximum(np.abs(u_hi), np.abs(u_lo)))))
            worst_v = max(worst_v, float(np.max(np.maximum(np.abs(v_hi), np.abs(v_lo)))))
            if reset == "hard":
                v_hi = np.maximum(np.minimum(v_hi, thr), 0.0)
            elif reset == "soft":
                v_hi = np.maximum(np.minimum(v_hi, thr), v_hi - reset_min)
        left = net.T - iterated
        if left:
            growth = _geometric_sum(keep_u, net.T)
            u_top, u_bottom = a_hi * growth, a_lo * growth
            worst_u = max(worst_u, float(np.max(np.maximum(np.abs(u_top), np.abs(u_bottom)))))
            drive_hi, drive_lo = u_top + bias_hi, u_bottom + bias_lo
            f = _upper_orbit_bound(v_hi, keep_v, drive_hi, reset, thr, reset_min, left - 1)
            z_end = keep_v ** (left - 1) * v_lo + drive_lo * _geometric_sum(keep_v, left - 1)
            highest = keep_v * f + drive_hi
            lowest = np.minimum(keep_v * v_lo + drive_lo, keep_v * z_end + drive_lo)
            worst_v = max(worst_v, float(np.max(np.maximum(np.abs(highest), np.abs(lowest)))))
        report.append({"layer": node.name, "max_abs_current": int(math.ceil(worst_u)),
                       "max_abs_voltage": int(math.ceil(worst_v)), "limit": limit,
                       "current_overflow": worst_u > limit, "voltage_overflow": worst_v > limit})
    return report
