"""Executing a Network: the float rule and the fixed-point rule, each written once.

The graph is run layer by layer over all T steps (synaptic ops on [T*B, ...] at once, then the
neuron recurrence over t), vectorized over the batch, a chunk of samples at a time
(samples_per_chunk sizes it from the network); a value is freed once the last node reading it has
run. Synaptic ops of a float network use float64. For a fixed-point network every operand is an
integer: a synaptic op runs in float32 where every partial sum it can form is an integer below 2^24
(float32_ops), in float64 otherwise (every partial sum far below 2^53), so the results are exact
integers whatever the summation order (see docs/ir.md). The fixed-point neuron rule is
snnc.fixedpoint's, compiled into one kernel (numba: `FixedNeuron`), which the cycle simulator runs
too. Axonal delays (node.delay) shift each input element along T before the op (`delayed_input`);
recurrent synapses (node.recurrent) are added to z inside the step loop, from the population's own
spikes of the previous step (in `float_neuron` and in the kernel).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba.extending import register_jitable

from snnc import encoding, fixedpoint
from snnc.ir import Network, Node, conv_dilation, conv_groups

MAX_CHUNK = 256               # samples per chunk for the smallest networks
WORKING_SET_BYTES = 1 << 30   # what one chunk of samples may hold while it runs (docs/benchmarks.md)
FLOAT64 = 8
EXACT_FLOAT32 = 2 ** 24       # float32 holds every integer of magnitude up to 2^24 exactly


def integer_valued(net: Network, name: str) -> bool:
    """Whether a fixed network's tensor holds integers: inputs, neuron outputs and their sums,
    sum pools and flattens of them; an average pool (kernel > 1) makes fractions."""
    node = net.node(name)
    if node.op == "input" or node.neuron is not None:
        return True
    if node.op == "avgpool" and node.attrs["kernel"] > 1:
        return False
    return all(integer_valued(net, source) for source in node.inputs)


def float32_ops(net: Network) -> set[str]:
    """The synaptic ops (conv2d, linear) of a fixed network that are exact in float32: they read
    integers, and every partial sum, at most sum |w| x the largest input for an output (plus
    sum |recurrent| for the node's own spikes, so that a backend may add those in the same dtype),
    stays below 2^24. They run in float32 (several times faster), the others in float64."""
    if not net.fixed:
        return set()
    from snnc.passes.quantize import largest_outputs, recurrent_sums

    largest = largest_outputs(net)
    exact = set()
    for node in net.nodes:
        if node.op in ("conv2d", "linear") and node.bn is None and integer_valued(net, node.inputs[0]):
            weight = np.abs(np.asarray(node.weight, dtype=np.float64)).reshape(node.weight.shape[0], -1)
            fed_back = sum(recurrent_sums(node)).max(initial=0.0)
            if weight.sum(axis=1).max(initial=0.0) * largest[node.inputs[0]] + fed_back < EXACT_FLOAT32:
                exact.add(node.name)
    return exact


def last_uses(net: Network) -> dict[str, int]:
    """For every node, the index (in net.nodes) of the last node that reads it; a node nobody reads
    (the readout) is its own last use. The executor frees a value after its last use."""
    last = {node.name: index for index, node in enumerate(net.nodes)}
    for index, node in enumerate(net.nodes):
        for name in node.inputs:
            last[name] = index
    return last


def _unfolded(node: Node) -> int:
    """Values of torch's im2col buffer per step and sample for a float64 convolution (its CPU
    kernel unfolds the whole batch unless the kernel is 1x1 with stride 1 and no padding)."""
    if node.op != "conv2d":
        return 0
    _, in_channels, kh, kw = node.weight.shape
    if (kh, kw) == (1, 1) and tuple(node.attrs["stride"]) == (1, 1) and tuple(node.attrs["padding"]) == (0, 0):
        return 0
    return int(in_channels * kh * kw * node.shape[1] * node.shape[2])


def bytes_per_sample(net: Network) -> int:
    """The most that running one sample holds at once, as `run` allocates (measured against it in
    docs/benchmarks.md): every spiking layer's spikes (uint8, the trace), and at the node where the
    sum peaks, the float64 values still to be read (spikes are read from the trace), the node's
    float64 inputs (and their delayed copy), torch's im2col buffer, its output and the neuron's
    outputs."""
    size = {node.name: int(np.prod(node.shape)) for node in net.nodes}
    spiking = {node.name for node in net.spiking_nodes()}
    last = last_uses(net)
    trace = sum(size[name] for name in spiking)
    live, peak = 0, 0   # float64 values held (non-spiking nodes still to be read)
    for index, node in enumerate(net.nodes):
        inputs = [net.node(name) for name in node.inputs]
        read = sum(size[i.name] for i in inputs if i.name in spiking)
        shifted = sum(size[i.name] for i in inputs) if node.delayed else 0   # delayed_input's copy
        working = FLOAT64 * (read + shifted + _unfolded(node) + 2 * size[node.name])
        peak = max(peak, FLOAT64 * live + working)
        if node.name not in spiking and last[node.name] > index:
            live += size[node.name]
        live -= sum(size[i.name] for i in inputs if i.name not in spiking and last[i.name] == index)
    return net.T * (trace + peak)


def samples_per_chunk(net: Network, budget: int = WORKING_SET_BYTES) -> int:
    """How many samples one chunk holds so that running it stays within `budget` bytes (at least 1)."""
    return max(1, min(MAX_CHUNK, budget // bytes_per_sample(net)))


@dataclass
class Trace:
    """What one execution produced, in logical time (no pipeline latency).

    spikes: spiking node name -> uint8 [T, B, *shape] (0/1, or counts up to max_spikes), int32 for
    a sigma-delta population's messages;
    readout_steps: the readout integrator's state per step [T, B, classes]; readout: [B, classes]
    (float: the recipe's mean/last; fixed: sum over steps for 'mean', i.e. T times the mean, or the
    last step, as integers); voltages: node name -> [T, B, *shape] membrane after reset, and
    (fixed point) currents: node name -> [T, B, *shape] synaptic current u, for the nodes asked for; overflow: node name -> counts of 'current' and 'voltage' wrap/saturation events.
    """

    spikes: dict[str, np.ndarray]
    readout_steps: np.ndarray
    readout: np.ndarray
    voltages: dict[str, np.ndarray] = field(default_factory=dict)
    overflow: dict[str, dict[str, int]] = field(default_factory=dict)
    currents: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.readout.argmax(axis=1)


def encode(net: Network, images: np.ndarray) -> np.ndarray:
    """Static frames [B, ...] presented at every step, as `net` takes them (snnc.encoding)."""
    return encoding.network_input(net.fixed, net.encoding, encoding.frame_units(net.encoding, net.T, images))


def synaptic_op(node: Node, inputs: list[torch.Tensor], with_bias: bool) -> torch.Tensor:
    """The node's op on merged [N, ...] tensors (N = T*B), in their dtype (float64, or float32
    where float32_ops allows)."""
    dtype = inputs[0].dtype
    if node.op == "conv2d":
        weight = _param(node.weight, dtype)
        bias = _param(node.bias, dtype) if with_bias and node.bias is not None else None
        return conv2d(node, inputs[0], weight, bias)
    if node.op == "linear":
        out = inputs[0] @ _param(node.weight, dtype).T
        if with_bias and node.bias is not None:
            out = out + _param(node.bias, dtype)
        return out
    if node.op in ("avgpool", "sumpool"):
        kernel, stride = node.attrs["kernel"], node.attrs["stride"]
        return F.avg_pool2d(inputs[0], kernel, stride, divisor_override=None if node.op == "avgpool" else 1)
    if node.op == "flatten":
        return inputs[0].reshape(inputs[0].shape[0], -1)
    if node.op == "add":
        total = inputs[0].clone()   # summed in place: one output, not a stack of the inputs
        for other in inputs[1:]:
            total += other
        return total
    raise ValueError(f"node '{node.name}': op '{node.op}' cannot be executed")


def conv2d(node: Node, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A conv2d node's convolution with all its attributes (the cycle simulator's too)."""
    return F.conv2d(x, weight, bias, stride=tuple(node.attrs["stride"]), padding=tuple(node.attrs["padding"]),
                    dilation=conv_dilation(node.attrs), groups=conv_groups(node.attrs))


def _param(array, dtype) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float64)).to(dtype)


def delayed_input(node: Node, x: torch.Tensor, steps: int) -> torch.Tensor:
    """A delayed node's input as its op reads it (docs/ir.md): x [1 or steps, B, *input shape] ->
    [steps, B, *input shape] with element j at step t taken from step t - delay[j] (0 before step 0).
    One step of x stands for every step (a static input), as everywhere in the executors."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    out = torch.zeros((steps,) + tuple(flat.shape[1:]), dtype=x.dtype)
    delay = torch.from_numpy(np.asarray(node.delay, dtype=np.int64).reshape(-1))
    for d in torch.unique(delay).tolist():
        if d >= steps:
            continue
        columns = delay == d
        source = flat[:, :, columns]
        out[d:, :, columns] = source[:steps - d] if source.shape[0] > 1 else source
    return out.reshape((steps,) + tuple(x.shape[1:]))


def float_neuron(node: Node, z: torch.Tensor, record_voltage: bool):
    """The float rule of ir.py's docstring over [T, B, *shape], recurrent input included;
    returns (outputs, voltages)."""
    n = node.neuron
    if n.mpr:
        from snnc.nn import mpr as phi
    else:
        phi = None
    threshold = _param(n.threshold, torch.float64) if n.kind == "spiking" else None
    reset_amount = _param(n.reset_amount, torch.float64) if n.reset == "soft" else None
    bias = _param(n.bias, torch.float64)
    recurrent = _param(node.recurrent, torch.float64).T if node.recurrent is not None else None
    v = _param(n.initial_state, torch.float64).expand(z.shape[1:]).clone()
    current = torch.zeros_like(v)
    outputs, voltages = [], []
    for t in range(z.shape[0]):
        drive = z[t]
        if recurrent is not None and t > 0:   # the population's own spikes of step t - 1
            fed_back = outputs[-1].reshape(drive.shape[0], -1).to(torch.float64) @ recurrent
            drive = drive + fed_back.reshape(drive.shape)
        current = (1.0 - n.u_decay) * current + drive
        v = (1.0 - n.v_decay) * v + n.input_gain * current + bias
        if n.kind == "spiking":
            fired = (phi(v) if phi else v) >= threshold
            if n.max_spikes > 1:       # a count: floor(v / threshold) spikes, at most max_spikes
                fired = fired * torch.clamp(torch.floor(v / threshold), max=n.max_spikes)
            if n.reset == "hard":
                v = torch.where(fired > 0, torch.zeros_like(v), v)
            elif n.reset == "soft":
                v = v - reset_amount * fired
            outputs.append(fired)
        else:
            outputs.append(v.clone())
        if record_voltage:
            voltages.append(v.clone())
    return torch.stack(outputs), (torch.stack(voltages) if record_voltage else None)


for _rule in (fixedpoint.decayed, fixedpoint.limited, fixedpoint.spike_count, fixedpoint.after_reset,
              fixedpoint.cuba_step, fixedpoint.sigma_delta_step):
    register_jitable(inline="always")(_rule)   # callable from compiled code, unchanged for numpy


@register_jitable(inline="always")
def _population_step(x, u, v, fired, voltages, currents, busy, record, fire_level, reset_amount, bias, keep_u, keep_v,
                     decay_bits, shift, top, current_saturates, voltage_saturates, hard, soft, max_spikes):
    """One step of every neuron of one sample on the integer input row x (any dtype holding
    integers): updates u and v, fills fired (and voltages, currents and busy when recording); returns the
    numbers of spikes and of current and voltage overflow events."""
    spike_count = 0
    current_events = 0
    voltage_events = 0
    if record:
        for n in range(u.shape[0]):
            busy[n] = u[n] != 0 or v[n] != 0
            u[n], v[n], spike, current_event, voltage_event = fixedpoint.cuba_step(
                np.int64(x[n]), u[n], v[n], fire_level[n], reset_amount[n], bias[n], keep_u, keep_v,
                decay_bits, shift, top, current_saturates, voltage_saturates, hard, soft, max_spikes)
            fired[n] = spike
            voltages[n] = v[n]
            currents[n] = u[n]
            spike_count += spike
            current_events += current_event
            voltage_events += voltage_event
    else:
        for n in range(u.shape[0]):
            u[n], v[n], spike, current_event, voltage_event = fixedpoint.cuba_step(
                np.int64(x[n]), u[n], v[n], fire_level[n], reset_amount[n], bias[n], keep_u, keep_v,
                decay_bits, shift, top, current_saturates, voltage_saturates, hard, soft, max_spikes)
            fired[n] = spike
            spike_count += spike
            current_events += current_event
            voltage_events += voltage_event
    return spike_count, current_events, voltage_events


def _compile_kernel(rules_digest: str):
    """The population kernel, compiled from fixedpoint.cuba_step. numba's on-disk cache is keyed
    on the kernel's bytecode and closure, not on the functions it calls: `rules_digest` (the
    SHA-256 of snnc/fixedpoint.py) is in the closure so that editing a rule recompiles it."""

    @numba.njit(parallel=True, cache=True, nogil=True)
    def cuba_run(a, steps, initial, fire_level, reset_amount, bias, recurrent_t, spikes, voltages, currents, busy, keep_u,
                 keep_v, decay_bits, shift, top, current_saturates, voltage_saturates, hard, soft, max_spikes):
        """Every step of one population on [steps, batch, neurons]; returns the number of spikes and
        of current and voltage overflow events. `a` holds one step (presented at every step) or all
        of them. `recurrent_t` is the transposed recurrent matrix ([source, target], int64), or
        empty: then the input row goes to the neurons as it is; else each step's input is
        a + the weights of the neurons that fired at the previous step of the same sample. Fills
        spikes, and voltages, currents and busy unless they have size 0 (the loop without them stores nothing
        more). A sample's state stays in two rows of its thread from the first step to the last;
        every value is formed in int64 from integers, so any dtype holding integers gives the same."""
        rules_version = rules_digest  # noqa: F841 (part of the cache key, see above)
        neurons = initial.shape[0]
        record = voltages.size > 0
        recurrent = recurrent_t.shape[0] > 0
        spike_count = 0
        current_events = 0
        voltage_events = 0
        for b in numba.prange(a.shape[1]):
            u = np.zeros(neurons, dtype=np.int64)
            v = initial.copy()
            drive = np.zeros(neurons if recurrent else 0, dtype=np.int64)
            sample_spikes = 0
            sample_current = 0
            sample_voltage = 0
            for t in range(steps):
                x = a[t if a.shape[0] > 1 else 0, b]
                row = t if record else 0
                if recurrent:
                    for n in range(neurons):
                        drive[n] = np.int64(x[n])
                    if t > 0:
                        for j in range(neurons):
                            if spikes[t - 1, b, j]:
                                for n in range(neurons):
                                    drive[n] += recurrent_t[j, n] * np.int64(spikes[t - 1, b, j])
                    counts = _population_step(drive, u, v, spikes[t, b], voltages[row, b], currents[row, b], busy[row, b], record,
                                              fire_level, reset_amount, bias, keep_u, keep_v, decay_bits, shift,
                                              top, current_saturates, voltage_saturates, hard, soft, max_spikes)
                else:
                    counts = _population_step(x, u, v, spikes[t, b], voltages[row, b], currents[row, b], busy[row, b], record,
                                              fire_level, reset_amount, bias, keep_u, keep_v, decay_bits, shift,
                                              top, current_saturates, voltage_saturates, hard, soft, max_spikes)
                sample_spikes += counts[0]
                sample_current += counts[1]
                sample_voltage += counts[2]
            spike_count += sample_spikes
            current_events += sample_current
            voltage_events += sample_voltage
        return spike_count, current_events, voltage_events

    return cuba_run


def _compile_sigma_delta_kernel(rules_digest: str):
    """The sigma-delta population kernel, compiled from fixedpoint.sigma_delta_step (cache key as
    in _compile_kernel)."""

    @numba.njit(parallel=True, cache=True, nogil=True)
    def sigma_delta_run(a, steps, initial, threshold, bias, messages, acts, sigmas, busy, accumulate, relu,
                        input_shift, message_shift, top):
        """Every step of one sigma-delta population on [steps, batch, neurons]: fills messages (int32),
        and acts, sigmas and busy unless they have size 0; returns the number of non-zero messages
        and of sigma and act values beyond the state registers (|x| >= top)."""
        rules_version = rules_digest  # noqa: F841 (part of the cache key)
        neurons = initial.shape[0]
        record = acts.size > 0
        events = 0
        sigma_events = 0
        act_events = 0
        for b in numba.prange(a.shape[1]):
            sigma = initial.copy()
            act = np.zeros(neurons, dtype=np.int64)
            residue = np.zeros(neurons, dtype=np.int64)
            sample_events = 0
            sample_sigma = 0
            sample_act = 0
            for t in range(steps):
                x = a[t if a.shape[0] > 1 else 0, b]
                for n in range(neurons):
                    if record:
                        busy[t, b, n] = sigma[n] != 0 or act[n] != 0 or residue[n] != 0
                    sigma[n], act[n], residue[n], message = fixedpoint.sigma_delta_step(
                        np.int64(x[n]), sigma[n], act[n], residue[n], threshold[n], bias[n], accumulate, relu,
                        input_shift, message_shift)
                    messages[t, b, n] = message
                    sample_events += message != 0
                    sample_sigma += sigma[n] >= top or sigma[n] <= -top
                    sample_act += act[n] >= top or act[n] <= -top
                    if record:
                        acts[t, b, n] = act[n]
                        sigmas[t, b, n] = sigma[n]
            events += sample_events
            sigma_events += sample_sigma
            act_events += sample_act
        return events, sigma_events, act_events

    return sigma_delta_run


_RULES_DIGEST = hashlib.sha256(Path(fixedpoint.__file__).read_bytes()).hexdigest()
_cuba_run = _compile_kernel(_RULES_DIGEST)
_sigma_delta_run = _compile_sigma_delta_kernel(_RULES_DIGEST)


def _per_neuron(array, shape) -> np.ndarray:
    """A neuron parameter broadcast to one int64 value per neuron (flattened)."""
    return np.broadcast_to(np.asarray(array, dtype=np.int64), shape).reshape(-1).copy()


@dataclass
class NeuronRun:
    """What a population did over T steps: outputs [T, B, *shape] (spikes as uint8: 0/1, or counts
    up to max_spikes; or the integrator's v as int64), v after reset and u (int64, when asked), busy
    (uint8, when asked: u or v was non-zero at the start of the step), the number of spikes (the
    sum of the counts), and the numbers of current and voltage overflow events."""

    outputs: torch.Tensor
    voltages: Optional[torch.Tensor]
    currents: Optional[torch.Tensor]
    busy: Optional[torch.Tensor]
    spike_count: int
    overflow: dict[str, int]


class FixedNeuron:
    """One population's fixed-point rule (snnc.fixedpoint; docs/semantics.md, section 3), compiled:
    used by the integer reference and by the cycle simulator (prepared once, run on any batch).

    `run(a, steps)` applies `steps` steps to the integer synaptic input `a` [1 or steps, B, *shape],
    of any dtype holding integers (float32 from an exact convolution is read as it is); one step of
    input is presented at every step. The node's recurrent weights (integers) are added to it from
    the population's own spikes of the previous step, so one call must cover all steps of a sample.
    """

    def __init__(self, node: Node, arithmetic: dict):
        n = node.neuron
        self.shape = tuple(node.shape)
        self.spiking = n.kind == "spiking"
        self.max_spikes = int(n.max_spikes)
        self.hard, self.soft = int(n.reset == "hard"), int(n.reset == "soft")
        self.top = fixedpoint.register_top(arithmetic["state_bits"])
        self.shift = fixedpoint.input_shift(n.input_shift, arithmetic["activation_shift"])
        self.decay_bits = arithmetic["decay_bits"]
        self.current_saturates = fixedpoint.saturates(arithmetic["current_overflow"])
        self.voltage_saturates = fixedpoint.saturates(arithmetic["voltage_overflow"])
        self.keep_u = fixedpoint.current_keep(n.u_decay, self.decay_bits)
        self.keep_v = fixedpoint.voltage_keep(n.v_decay, self.decay_bits)
        fire_level = fixedpoint.fire_at(n.threshold, arithmetic["fire_rule"]) if self.spiking \
            else fixedpoint.NEVER_FIRES
        self.fire_level = _per_neuron(fire_level, self.shape)
        self.reset_amount = _per_neuron(n.reset_amount if self.soft else 0, self.shape)
        self.bias = _per_neuron(n.bias, self.shape)
        self.initial = _per_neuron(n.initial_state, self.shape)
        self.recurrent_t = np.zeros((0, 0), np.int64) if node.recurrent is None \
            else np.ascontiguousarray(np.asarray(node.recurrent, dtype=np.int64).T)

    def run(self, a: torch.Tensor, steps: int, record_voltage: bool = False,
            record_busy: bool = False) -> NeuronRun:
        batch, neurons = a.shape[1], len(self.initial)
        full = (steps, batch, neurons)
        recorded = full if record_voltage or record_busy or not self.spiking else (1, batch, 0)   # empty rows
        spikes = np.empty(full, dtype=np.uint8)
        voltages, busy = np.empty(recorded, dtype=np.int64), np.empty(recorded, dtype=np.uint8)
        currents = np.empty(recorded, dtype=np.int64)   # the kernel records u wherever it records v
        spike_count, current_events, voltage_events = _cuba_run(
            a.contiguous().reshape(a.shape[0], batch, neurons).numpy(), steps, self.initial, self.fire_level,
            self.reset_amount, self.bias, self.recurrent_t, spikes, voltages, currents, busy, self.keep_u, self.keep_v,
            self.decay_bits,
            self.shift, self.top, self.current_saturates, self.voltage_saturates, self.hard, self.soft,
            self.max_spikes)
        shape = (steps, batch) + self.shape
        voltages = torch.from_numpy(voltages).reshape(shape) if voltages.size else None
        return NeuronRun(outputs=torch.from_numpy(spikes).reshape(shape) if self.spiking else voltages,
                         voltages=voltages if record_voltage else None,
                         currents=torch.from_numpy(currents).reshape(shape) if record_voltage else None,
                         busy=torch.from_numpy(busy).reshape(shape) if record_busy else None,
                         spike_count=int(spike_count) if self.spiking else 0,
                         overflow={"current": int(current_events), "voltage": int(voltage_events)})


class SigmaDeltaNeuron:
    """One sigma-delta population's rule (snnc.fixedpoint.sigma_delta_step), compiled; the same
    interface as FixedNeuron. Its outputs are the signed messages (int32), its recorded voltages
    act and its currents sigma; overflow counts sigma ('current') and act ('voltage') values beyond
    the state registers, which Lava's model keeps in int32 and Loihi would not hold."""

    def __init__(self, node: Node, arithmetic: dict):
        n = node.neuron
        self.shape = tuple(node.shape)
        self.top = fixedpoint.register_top(arithmetic["state_bits"])
        self.threshold = _per_neuron(n.threshold, self.shape)
        self.bias = _per_neuron(n.bias, self.shape)
        self.initial = _per_neuron(n.initial_state, self.shape)
        self.accumulate, self.relu = int(n.accumulate), int(n.activation == "relu")
        self.input_shift, self.message_shift = int(n.input_shift), int(n.message_shift)

    def run(self, a: torch.Tensor, steps: int, record_voltage: bool = False,
            record_busy: bool = False) -> NeuronRun:
        batch, neurons = a.shape[1], len(self.initial)
        full = (steps, batch, neurons)
        recorded = full if record_voltage or record_busy else (1, batch, 0)
        messages = np.empty(full, dtype=np.int32)
        acts, sigmas = np.empty(recorded, dtype=np.int64), np.empty(recorded, dtype=np.int64)
        busy = np.empty(recorded, dtype=np.uint8)
        events, sigma_events, act_events = _sigma_delta_run(
            a.contiguous().reshape(a.shape[0], batch, neurons).numpy(), steps, self.initial, self.threshold,
            self.bias, messages, acts, sigmas, busy, self.accumulate, self.relu, self.input_shift,
            self.message_shift, self.top)
        shape = (steps, batch) + self.shape
        return NeuronRun(outputs=torch.from_numpy(messages).reshape(shape),
                         voltages=torch.from_numpy(acts).reshape(shape) if record_voltage else None,
                         currents=torch.from_numpy(sigmas).reshape(shape) if record_voltage else None,
                         busy=torch.from_numpy(busy).reshape(shape) if record_busy else None,
                         spike_count=int(events), overflow={"current": int(sigma_events), "voltage": int(act_events)})


def fixed_neuron(node: Node, arithmetic: dict):
    """The compiled rule of a fixed population: SigmaDeltaNeuron or FixedNeuron."""
    return (SigmaDeltaNeuron if node.neuron.kind == "sigma_delta" else FixedNeuron)(node, arithmetic)


def _run_chunk(net: Network, inputs: np.ndarray, record_voltages: tuple[str, ...], exact: set[str]):
    """One chunk through every node in order. A value is dropped after the last node that reads
    it; spikes are kept once, as the trace's uint8, and read from there. `exact`: float32_ops."""
    T, B = inputs.shape[:2]
    last = last_uses(net)
    values: dict[str, torch.Tensor] = {}
    spikes, voltages, currents, overflow = {}, {}, {}, {}
    readout_steps = None

    def merged(node, name, dtype):
        """Input `name` of `node` as its op reads it: delayed if the node says so, [T*B, ...]."""
        value = values[name] if name in values else torch.from_numpy(spikes[name])
        if node.delayed:
            value = delayed_input(node, value, T)
        return value.reshape((T * B,) + value.shape[2:]).to(dtype)

    for index, node in enumerate(net.nodes):
        if node.op == "input":
            values[node.name] = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float64))
            continue
        dtype = torch.float32 if node.name in exact else torch.float64
        z = synaptic_op(node, [merged(node, name, dtype) for name in node.inputs], with_bias=not net.fixed)
        z = z.reshape((T, B) + z.shape[1:])
        for name in node.inputs:
            if last[name] == index:
                values.pop(name, None)
        if node.bn is not None:
            shape = (-1,) + (1,) * (z.dim() - 3)
            z.mul_(_param(node.bn.scale, torch.float64).reshape(shape)).add_(
                _param(node.bn.shift, torch.float64).reshape(shape))
        if node.neuron is None:
            values[node.name] = z
            continue
        record = node.name in record_voltages
        if net.fixed:
            result = fixed_neuron(node, net.arithmetic).run(z.round_(), T, record_voltage=record)
            out, volt, overflow[node.name] = result.outputs, result.voltages, result.overflow
            if result.currents is not None:
                currents[node.name] = result.currents.numpy()
        else:
            out, volt = float_neuron(node, z, record)
        del z
        if volt is not None:
            voltages[node.name] = volt.numpy()
        if node.spiking:   # fixed: uint8 spikes or counts, int32 sigma-delta messages
            spikes[node.name] = out.numpy() if net.fixed else out.to(torch.uint8).numpy()
        else:
            readout_steps = out.numpy()
            if last[node.name] > index:
                values[node.name] = out.to(torch.float64)
    return spikes, readout_steps, voltages, overflow, currents


def run(net: Network, inputs: np.ndarray, record_voltages: tuple[str, ...] = (),
        chunk: Optional[int] = None) -> Trace:
    """Execute `net` on encoded inputs [T, B, ...] and return every layer's spikes and the readout,
    `chunk` samples at a time (default: samples_per_chunk(net)). The trace holds every layer's
    spikes for all B samples: a caller with many samples passes them in chunks (InputSet.chunks)
    and keeps what it needs of each trace."""
    inputs = np.asarray(inputs)
    chunk = samples_per_chunk(net) if chunk is None else max(1, int(chunk))
    exact = float32_ops(net)
    if inputs.shape[1] <= chunk:
        spikes, readout_steps, voltages, overflow, currents = _run_chunk(net, inputs, record_voltages, exact)
    else:
        parts = [_run_chunk(net, inputs[:, start:start + chunk], record_voltages, exact)
                 for start in range(0, inputs.shape[1], chunk)]
        spikes = {name: np.concatenate([p[0][name] for p in parts], axis=1) for name in parts[0][0]}
        readout_steps = np.concatenate([p[1] for p in parts], axis=1)
        voltages = {name: np.concatenate([p[2][name] for p in parts], axis=1) for name in parts[0][2]}
        overflow = {name: {kind: sum(p[3][name][kind] for p in parts) for kind in ("current", "voltage")}
                    for name in parts[0][3]}
        currents = {name: np.concatenate([p[4][name] for p in parts], axis=1) for name in parts[0][4]}
    return Trace(spikes=spikes, readout_steps=readout_steps, readout=readout(net, readout_steps),
                 voltages=voltages, overflow=overflow, currents=currents)


def readout(net: Network, steps: np.ndarray) -> np.ndarray:
    """The network's readout from the integrator's per-step state: mean (x T when fixed) or last."""
    if net.fixed:
        return fixedpoint.readout(steps, net.readout)
    return steps[-1] if net.readout == "last" else steps.mean(axis=0)
