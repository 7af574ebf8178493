"""The fixed-point register rules of the CUBA neuron, each defined once (docs/semantics.md, section 3).

Every executor takes its arithmetic from here: snnc.execute compiles the scalar functions below
into its numba kernel (the reference and the cycle simulator), snnc.lava_procs.models calls them
on numpy arrays inside Lava, snnc.onnx_graph builds its graph from the same registers, keeps and
limits, and the bound analysis and the netx frontend read the same definitions.

The functions use only `+ - * // >> < <= > >=`, numpy's minimum/maximum and branches on
per-population constants, so one text serves three kinds of operand: Python integers, numpy int64 arrays and (compiled by numba) int64 scalars. This
module imports numpy and snnc.errors only: Lava executes the process models, which import it, while
it searches for models.

Widths come from the network's `arithmetic` (a target's copy): decays are fractions of
2**decay_bits, the state registers have state_bits bits.
"""
from __future__ import annotations

import numpy as np

from snnc.errors import InputError

OVERFLOW_MODES = ("wrap", "saturate")
FIRE_RULES = (">", ">=")
NEVER_FIRES = np.iinfo(np.int64).max   # fire_at of a population that never fires (an integrator)

# Lava's own LIF (lava-nc 0.10.0, bit-accurate model): fixed registers, which netx networks use.
LAVA_LIF_REGISTERS = {"activation_shift": 6, "state_bits": 24, "decay_bits": 12,
                      "current_overflow": "wrap", "voltage_overflow": "saturate"}
LAVA_LIF_FIRE_RULE = ">"
LAVA_LIF_THRESHOLD_SHIFT = 6   # Lava's LIF compares v > vth << 6
LAVA_LIF_THRESHOLD_BITS = 17   # vth is an unsigned 17-bit mantissa


# --- registers and parameters (Python integers) --------------------------------------------------

def decay_unit(decay_bits: int) -> int:
    """The decay registers' unit: du and dv are fractions of 2**decay_bits."""
    return 1 << decay_bits


def current_keep(u_decay: int, decay_bits: int) -> int:
    """What u keeps per step, in units of 2**decay_bits: unit - du - 1 (du = unit - 1 keeps
    nothing; du = -1, which only netx's iDecay = 0 produces, keeps everything)."""
    return decay_unit(decay_bits) - int(u_decay) - 1


def voltage_keep(v_decay: int, decay_bits: int) -> int:
    """What v keeps per step, in units of 2**decay_bits: unit - dv."""
    return decay_unit(decay_bits) - int(v_decay)


def current_decay_register(fraction_lost: float, decay_bits: int) -> int:
    """du for a float current that loses `fraction_lost` per step (current_keep inverts it)."""
    return int(round(float(fraction_lost) * decay_unit(decay_bits))) - 1


def voltage_decay_register(fraction_lost: float, decay_bits: int) -> int:
    """dv for a float membrane that loses `fraction_lost` per step (voltage_keep inverts it)."""
    return int(round(float(fraction_lost) * decay_unit(decay_bits)))


def register_top(state_bits: int) -> int:
    """2**(state_bits - 1): a wrapped register holds (-top, top], a saturated one [1 - top, top - 1]."""
    return 1 << (state_bits - 1)


def register_limit(state_bits: int) -> int:
    """The largest magnitude every state register holds without overflow: top - 1."""
    return register_top(state_bits) - 1


def saturates(mode: str) -> bool:
    """Whether an overflow mode ('wrap' or 'saturate') saturates."""
    if mode not in OVERFLOW_MODES:
        raise InputError(f"network arithmetic: overflow mode must be one of {OVERFLOW_MODES}, got {mode!r}")
    return mode == "saturate"


def fire_offset(fire_rule: str) -> int:
    """fire level - threshold register: v > theta iff v >= theta + 1 on integers."""
    if fire_rule not in FIRE_RULES:
        raise InputError(f"network arithmetic: fire rule must be one of {FIRE_RULES}, got {fire_rule!r}")
    return int(fire_rule == ">")


def input_shift(own, activation_shift: int) -> int:
    """The left shift a population's input takes: its own input_shift, else the arithmetic's
    activation_shift."""
    return int(activation_shift if own is None else own)


def fire_at(threshold, fire_rule: str):
    """The integer the membrane must reach to fire (int64): the threshold register under '>=', one
    more under '>'."""
    return np.asarray(threshold, dtype=np.int64) + fire_offset(fire_rule)


# --- one step (Python ints, numpy int64 arrays, numba int64 scalars) -----------------------------

def decayed(x, keep, decay_bits):
    """trunc_toward_zero(x * keep / 2**decay_bits), Loihi's decay: adding unit - 1 before the
    arithmetic shift turns its rounding toward -inf into rounding toward zero for negative x."""
    y = x * keep
    return (y + (y < 0) * ((1 << decay_bits) - 1)) >> decay_bits


def limited(x, top, saturate):
    """A state register's overflow rule: saturation to [1 - top, top - 1], or one wrap into
    (-top, top] (x - 2 top above top, x + 2 top at or below -top): exactly one wrap, not a
    modulo, as Lava's PyLifModelBitAcc wraps u."""
    if saturate:
        return np.minimum(np.maximum(x, 1 - top), top - 1)
    y = x - (x > top) * (2 * top)
    return y + (y <= -top) * (2 * top)


def spike_count(v, fire_level, max_spikes):
    """The spikes a membrane v fires: v >= fire_level (0 or 1) for a binary population; for
    max_spikes > 1 the count min(v // fire_level, max_spikes) where v >= fire_level (the divisor
    kept at least 1)."""
    fired = v >= fire_level
    if max_spikes == 1:
        return fired
    return fired * np.minimum(v // np.maximum(fire_level, 1), max_spikes)


def after_reset(v, fired, reset_amount, hard, soft):
    """v after the spike decision (`fired` a count, 0 or 1 for a binary population): 0 where it
    fired (hard = 1), v - fired * reset_amount (soft = 1), v (neither). Branch-free on `fired`."""
    return v - (fired > 0) * hard * v - fired * soft * reset_amount


def cuba_step(x, u, v, fire_level, reset_amount, bias, keep_u, keep_v, decay_bits, shift, top,
              current_saturates, voltage_saturates, hard, soft, max_spikes=1):
    """One step of the CUBA neuron on integer synaptic input x:
        u = limit(decay(u, keep_u) + (x << shift)),  v = limit(decay(v, keep_v) + u + bias),
        fired = spike_count(v, fire_level, max_spikes), then the reset.
    Returns (u, v after reset, fired, u overflowed, v overflowed)."""
    current = (x << shift) + decayed(u, keep_u, decay_bits)
    u_next = limited(current, top, current_saturates)
    voltage = decayed(v, keep_v, decay_bits) + u_next + bias
    membrane = limited(voltage, top, voltage_saturates)
    fired = spike_count(membrane, fire_level, max_spikes)
    return (u_next, after_reset(membrane, fired, reset_amount, hard, soft), fired,
            u_next != current, membrane != voltage)


def sigma_delta_step(x, sigma, act, residue, threshold, bias, accumulate, relu, input_shift, message_shift):
    """One step of Lava's fixed-point sigma-delta neuron (lava.proc.sdn, PySigmaDeltaModelFixed;
    with accumulate = 0, relu = 0 and bias 0 its Delta encoder) on integer input x:
        sigma = sigma * accumulate + (x << input_shift),  act = relu?(sigma + bias),
        delta = act - act_before + residue,  sent = delta where |delta| >= threshold else 0,
        residue = delta - sent,  message = sent >> message_shift (an arithmetic shift).
    Returns (sigma, act, residue, message). No register limit applies: Lava's model keeps the
    state in int32 (the executors count values beyond the target's state_bits as overflow)."""
    sigma_next = sigma * accumulate + (x << input_shift)
    value = sigma_next + bias
    act_next = np.maximum(value, 0) if relu else value
    delta = act_next - act + residue
    sent = delta * (np.maximum(delta, -delta) >= threshold)
    return sigma_next, act_next, delta - sent, sent >> message_shift


# --- readout -------------------------------------------------------------------------------------

def readout(steps: np.ndarray, kind: str) -> np.ndarray:
    """A fixed network's readout from the integrator's per-step state [T, ...]: the last step for
    'last', else ('mean', see snnc.ir.READOUTS) the sum over the steps, T times the mean, kept an
    integer."""
    return steps[-1] if kind == "last" else steps.sum(axis=0)
