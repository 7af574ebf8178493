"""Executing a Network: the float rule and the fixed-point rule, each written once.

The graph is run layer by layer over all T steps (synaptic ops on [T*B, ...] at once, then the
neuron recurrence over t), vectorized over the batch. Synaptic ops use float64 arithmetic: for a
fixed-point network every operand is an integer and every partial sum stays far below 2^53, so the
float64 results are exact integers whatever the summation order (see docs/ir.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snnc.ir import Network, Node

DECAY_UNITY = 4096  # Loihi decays are 12-bit fractions of 4096
_DECAY_SHIFT = 12  # 4096 == 1 << 12
DEFAULT_CHUNK = 256


@dataclass
class Trace:
    """What one execution produced, in logical time (no pipeline latency).

    spikes: spiking node name -> uint8 [T, B, *shape]; readout_steps: the readout integrator's state
    per step [T, B, classes]; readout: [B, classes] (float: the recipe's mean/last; fixed: sum over
    steps for 'mean', i.e. T times the mean, or the last step, as integers); voltages: node name ->
    [T, B, *shape] membrane after reset, for the nodes asked for; overflow: node name -> counts of
    'current' and 'voltage' wrap/saturation events.
    """

    spikes: dict[str, np.ndarray]
    readout_steps: np.ndarray
    readout: np.ndarray
    voltages: dict[str, np.ndarray] = field(default_factory=dict)
    overflow: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.readout.argmax(axis=1)


def encode(net: Network, images: np.ndarray) -> np.ndarray:
    """The image presented at every step: pixels as integers (fixed) or reals (float), or as binary
    spikes for networks whose encoding says so (netx)."""
    images = np.asarray(images)
    if net.encoding.get("kind") == "spikes":  # binary input spikes: a pixel fires when bright enough
        images = images >= net.encoding["threshold"]
    steps = np.broadcast_to(images, (net.T,) + images.shape)
    if net.fixed:
        return steps.astype(np.int64)
    return steps.astype(np.float64) * net.encoding["scale"]


def synaptic_op(node: Node, inputs: list[torch.Tensor], with_bias: bool) -> torch.Tensor:
    """The node's op on merged [N, ...] float64 tensors (N = T*B)."""
    if node.op == "conv2d":
        weight = torch.from_numpy(np.asarray(node.weight, dtype=np.float64))
        bias = torch.from_numpy(np.asarray(node.bias, dtype=np.float64)) if with_bias and node.bias is not None else None
        return F.conv2d(inputs[0], weight, bias, stride=tuple(node.attrs["stride"]),
                        padding=tuple(node.attrs["padding"]))
    if node.op == "linear":
        weight = torch.from_numpy(np.asarray(node.weight, dtype=np.float64))
        out = inputs[0] @ weight.T
        if with_bias and node.bias is not None:
            out = out + torch.from_numpy(np.asarray(node.bias, dtype=np.float64))
        return out
    if node.op in ("avgpool", "sumpool"):
        kernel, stride = node.attrs["kernel"], node.attrs["stride"]
        return F.avg_pool2d(inputs[0], kernel, stride, divisor_override=None if node.op == "avgpool" else 1)
    if node.op == "flatten":
        return inputs[0].reshape(inputs[0].shape[0], -1)
    if node.op == "add":
        return torch.stack(inputs).sum(0)
    raise ValueError(f"node '{node.name}': op '{node.op}' cannot be executed")


def _param(array, dtype) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array)).to(dtype)


def _state_param(array, dtype) -> torch.Tensor:
    """A neuron parameter for FixedNeuronStep: 0-d when all its values are equal (the same numbers
    under broadcasting, and far cheaper to combine with a state than a per-neuron array)."""
    array = np.asarray(array)
    if array.size and (array == array.flat[0]).all():
        array = array.reshape(-1)[:1].reshape(())
    return _param(np.array(array), dtype)


def float_neuron(node: Node, z: torch.Tensor, record_voltage: bool):
    """The float rule of ir.py's docstring over [T, B, *shape]; returns (outputs, voltages)."""
    n = node.neuron
    if n.mpr:
        from snnc.nn import mpr as phi
    else:
        phi = None
    threshold = _param(n.threshold, torch.float64) if n.kind == "spiking" else None
    reset_amount = _param(n.reset_amount, torch.float64) if n.reset == "soft" else None
    bias = _param(n.bias, torch.float64)
    v = _param(n.initial_state, torch.float64).expand(z.shape[1:]).clone()
    current = torch.zeros_like(v)
    outputs, voltages = [], []
    for t in range(z.shape[0]):
        current = (1.0 - n.u_decay) * current + z[t]
        v = (1.0 - n.v_decay) * v + n.input_gain * current + bias
        if n.kind == "spiking":
            fired = (phi(v) if phi else v) >= threshold
            if n.reset == "hard":
                v = torch.where(fired, torch.zeros_like(v), v)
            elif n.reset == "soft":
                v = v - reset_amount * fired
            outputs.append(fired)
        else:
            outputs.append(v.clone())
        if record_voltage:
            voltages.append(v.clone())
    return torch.stack(outputs), (torch.stack(voltages) if record_voltage else None)


def _limit(x: torch.Tensor, bits: int, mode: str) -> tuple[torch.Tensor, int]:
    """Apply the target's overflow rule to a state register; returns (value, number of events).
    `x` is handed over: a new tensor of the caller's, which saturation clamps in place."""
    top = 2 ** (bits - 1)
    if not x.numel():
        return x, 0
    low, high = (int(value) for value in torch.aminmax(x))  # the common case: one pass, nothing to limit
    if (-(top - 1) <= low and high <= top - 1) if mode == "saturate" else (-top < low and high <= top):
        return x, 0
    if mode == "saturate":   # count only the sides the min/max show to overflow, then clamp
        events = int(torch.count_nonzero(x > top - 1)) if high > top - 1 else 0
        events += int(torch.count_nonzero(x < -(top - 1))) if low < -(top - 1) else 0
        return x.clamp_(-(top - 1), top - 1), events
    # wrap, exactly as Lava's PyLifModelBitAcc wraps u
    out = torch.where(x > top, x - 2 * top, x)
    out = torch.where(out <= -top, x + 2 * top, out)
    return out, int(torch.count_nonzero(out - x))   # two different integers never subtract to 0


def _decay(x: torch.Tensor, keep: int) -> torch.Tensor:
    """trunc_toward_zero(x * keep / 4096) on int32/int64, computed with shifts (an exact identity)."""
    if keep == DECAY_UNITY:
        return x
    if keep == 0:
        return torch.zeros_like(x)
    sign = 8 * x.element_size() - 1
    if keep & (keep - 1) == 0:  # keep = 2^k: x * 2^k / 4096 = x / 2^(12 - k), no multiply needed
        shift = _DECAY_SHIFT - (keep.bit_length() - 1)
        if shift == 1:   # x - (x >> sign) adds the 1 a negative x needs: one pass fewer
            low = x >> sign
            return torch.sub(x, low, out=low).bitwise_right_shift_(1)
        return (x >> sign).bitwise_and_((1 << shift) - 1).add_(x).bitwise_right_shift_(shift)
    y = x * keep
    y += (y >> sign).bitwise_and_(DECAY_UNITY - 1)   # floor -> toward zero for negative y
    return y.bitwise_right_shift_(_DECAY_SHIFT)


def _decay_(x: torch.Tensor, keep: int, sign: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """_decay(x, keep) computed in x's memory where no multiply is needed (x is overwritten);
    returns (result, a spare tensor of x's shape and dtype that the caller may overwrite, or None)."""
    if not x.is_contiguous() or _multiplies(keep):
        return _decay(x, keep), None
    if keep == DECAY_UNITY:
        return x, None
    if keep == 0:
        return x.zero_(), None
    shift = _DECAY_SHIFT - (keep.bit_length() - 1)
    low = x >> sign                       # -1 where x < 0: x + (2^shift - 1) there, then the shift
    if shift == 1:
        x.sub_(low)
    else:
        x.add_(low.bitwise_and_((1 << shift) - 1))
    return x.bitwise_right_shift_(shift), low


def _multiplies(keep: int) -> bool:
    """Whether _decay(x, keep) needs the product x * keep (keep neither 0, 4096 nor a power of 2)."""
    return keep not in (0, DECAY_UNITY) and keep & (keep - 1) != 0


class FixedNeuronStep:
    """One population's fixed-point rule, one time step at a time (the per-step form of
    `fixed_neuron`, for simulators that advance the whole chip step by step).

    `initial_state(sample_shape)` gives (u, v) at the start; `step(u, v, a)` applies one step to the
    integer synaptic input `a` (of dtype `self.dtype`) and returns (output, u, v, current_events,
    voltage_events): the output is the spike mask (spiking) or v as int64 (integrator), and v is the
    membrane after reset. `step` may overwrite the u and v it is given (pass it the state it or
    initial_state returned, and keep no other reference to them); it never writes to `a`.

    The state is int64, or int32 (half the memory traffic) when `input_bound`, a bound on |a|, proves
    that no intermediate value can leave int32: then both give the same integers.
    """

    def __init__(self, node: Node, arithmetic: dict, input_bound: Optional[int] = None):
        n = node.neuron
        self.spiking, self.reset = n.kind == "spiking", n.reset
        self.bits, self.shift = arithmetic["state_bits"], arithmetic["activation_shift"]
        self.current_mode, self.voltage_mode = arithmetic["current_overflow"], arithmetic["voltage_overflow"]
        self.strict = arithmetic["fire_rule"] == ">"
        self.keep_u, self.keep_v = DECAY_UNITY - int(n.u_decay) - 1, DECAY_UNITY - int(n.v_decay)
        params = {"threshold": n.threshold if self.spiking else None,
                  "reset_amount": n.reset_amount if n.reset == "soft" else None,
                  "bias": n.bias, "initial": n.initial_state}
        self.dtype = torch.int32 if self._fits_int32(input_bound, params) else torch.int64
        for key, value in params.items():
            setattr(self, key, None if value is None else _state_param(value, self.dtype))
        self.scale = 1 << self.shift          # a << shift == a * scale (same bits), a faster kernel
        # the fire test as a sign: v fires iff v - fire_at >= 0 (v > threshold iff v >= threshold + 1
        # on integers), used when v - fire_at cannot overflow: |v| <= 2^(bits-1) after the limit
        self.sign = 8 * torch.empty((), dtype=self.dtype).element_size() - 1
        self.fire_at = None
        if self.spiking:
            fire_at = np.asarray(n.threshold, dtype=object) + (1 if self.strict else 0)
            if int(np.abs(fire_at).max(initial=0)) + 2 ** (self.bits - 1) < 2 ** self.sign:
                self.fire_at = _state_param(np.asarray(fire_at, dtype=np.int64), self.dtype)

    def _fits_int32(self, input_bound: Optional[int], params: dict) -> bool:
        """Every value the rule forms stays below 2^31 in magnitude: |a << shift| <= 2^29, states
        limited to at most 28 bits, parameters <= 2^29, and no decay multiply (x * keep)."""
        room = 2 ** 29
        return (input_bound is not None and input_bound << self.shift <= room and self.bits <= 28
                and not _multiplies(self.keep_u) and not _multiplies(self.keep_v)
                and all(int(np.abs(np.asarray(value)).max(initial=0)) <= room
                        for value in params.values() if value is not None))

    def initial_state(self, shape) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.initial.expand(shape).clone()
        return torch.zeros_like(v), v

    def step(self, u: torch.Tensor, v: torch.Tensor, a: torch.Tensor):
        """One step. It owns `u` and `v` (the state initial_state or the previous step returned) and
        may overwrite them; `a` is only read. Reusing the state's memory saves most allocations."""
        # u = decay(u) + (a << shift); v = decay(v) + u + bias
        if self.keep_u:
            u_new = a * self.scale
            u_new += _decay(u, self.keep_u)
        elif u.shape == a.shape and u.dtype == a.dtype and u.is_contiguous():
            u_new = torch.mul(a, self.scale, out=u)   # the old u is not read: its memory is reused
        else:
            u_new = a * self.scale
        u, current_events = _limit(u_new, self.bits, self.current_mode)
        v, scratch = _decay_(v, self.keep_v, self.sign)
        v, voltage_events = _limit(v.add_(u).add_(self.bias), self.bits, self.voltage_mode)
        if not self.spiking:
            return v.to(torch.int64, copy=True), u, v, current_events, voltage_events
        if self.fire_at is not None and self.reset in ("hard", "soft"):
            # one subtract and shift give `keep`, -1 where v does not fire and 0 where it does: a hard
            # reset is v & keep, and keep + 1 is the spike mask (far fewer passes than compare, ~, *)
            if scratch is not None and scratch.shape == v.shape:
                keep = torch.sub(v, self.fire_at, out=scratch)
            else:
                keep = torch.sub(v, self.fire_at)
            keep = keep.bitwise_right_shift_(self.sign)
            if self.reset == "hard":
                v = v.bitwise_and_(keep)
                fired = keep.add_(1)
            else:
                fired = keep.add_(1)
                v = v.addcmul_(fired, self.reset_amount, value=-1)   # v - reset_amount * fired, one pass
            return fired.to(torch.uint8).view(torch.bool), u, v, current_events, voltage_events
        fired = v > self.threshold if self.strict else v >= self.threshold
        if self.reset == "hard":
            v = v * ~fired   # far faster than masked_fill_ on CPU
        elif self.reset == "soft":
            v = v - self.reset_amount * fired
        return fired, u, v, current_events, voltage_events


def fixed_neuron(node: Node, a: torch.Tensor, arithmetic: dict, record_voltage: bool):
    """Loihi's CUBA rule (SEMANTICS section 2) with snnc's threshold/reset options on int64 `a`
    [T, B, *shape] (computed in int32 when the range of `a` allows it: the same integers)."""
    low, high = (int(value) for value in torch.aminmax(a)) if a.numel() else (0, 0)
    rule = FixedNeuronStep(node, arithmetic, input_bound=max(-low, high))
    a = a.to(rule.dtype)
    u, v = rule.initial_state(a.shape[1:])
    current_events = voltage_events = 0
    outputs, voltages = [], []
    for t in range(a.shape[0]):
        out, u, v, events_u, events_v = rule.step(u, v, a[t])
        current_events += events_u
        voltage_events += events_v
        outputs.append(out)
        if record_voltage:
            voltages.append(v.to(torch.int64, copy=True))
    overflow = {"current": current_events, "voltage": voltage_events}
    return torch.stack(outputs), (torch.stack(voltages) if record_voltage else None), overflow


def _run_chunk(net: Network, inputs: np.ndarray, record_voltages: tuple[str, ...]):
    T, B = inputs.shape[:2]
    values: dict[str, torch.Tensor] = {}
    spikes, voltages, overflow = {}, {}, {}
    readout_steps = None
    for node in net.nodes:
        if node.op == "input":
            values[node.name] = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float64))
            continue
        merged = [values[name].reshape((T * B,) + values[name].shape[2:]) for name in node.inputs]
        z = synaptic_op(node, merged, with_bias=not net.fixed)
        z = z.reshape((T, B) + z.shape[1:])
        if node.bn is not None:
            shape = (-1,) + (1,) * (z.dim() - 3)
            z = z * _param(node.bn.scale, torch.float64).reshape(shape) + _param(node.bn.shift, torch.float64).reshape(shape)
        if node.neuron is None:
            values[node.name] = z
            continue
        record = node.name in record_voltages
        if net.fixed:
            out, volt, overflow[node.name] = fixed_neuron(node, z.round().to(torch.int64), net.arithmetic, record)
        else:
            out, volt = float_neuron(node, z, record)
        if volt is not None:
            voltages[node.name] = volt.numpy()
        if node.spiking:
            spikes[node.name] = out.to(torch.uint8).numpy()
            values[node.name] = out.to(torch.float64)
        else:
            readout_steps = out.numpy()
            values[node.name] = out.to(torch.float64)
    return spikes, readout_steps, voltages, overflow


def run(net: Network, inputs: np.ndarray, record_voltages: tuple[str, ...] = (),
        chunk: int = DEFAULT_CHUNK) -> Trace:
    """Execute `net` on encoded inputs [T, B, ...] and return every layer's spikes and the readout."""
    inputs = np.asarray(inputs)
    parts = [_run_chunk(net, inputs[:, start:start + chunk], record_voltages)
             for start in range(0, inputs.shape[1], chunk)]
    spikes = {name: np.concatenate([p[0][name] for p in parts], axis=1) for name in parts[0][0]}
    readout_steps = np.concatenate([p[1] for p in parts], axis=1)
    voltages = {name: np.concatenate([p[2][name] for p in parts], axis=1) for name in parts[0][2]}
    overflow = {name: {kind: sum(p[3][name][kind] for p in parts) for kind in ("current", "voltage")}
                for name in parts[0][3]}
    return Trace(spikes=spikes, readout_steps=readout_steps, readout=readout(net, readout_steps),
                 voltages=voltages, overflow=overflow)


def readout(net: Network, steps: np.ndarray) -> np.ndarray:
    """The network's readout from the integrator's per-step state: mean (x T when fixed) or last."""
    if net.readout == "last":
        return steps[-1]
    if net.fixed:
        return steps.sum(axis=0)
    return steps.mean(axis=0)
