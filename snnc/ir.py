"""The snnc intermediate representation: one small, typed, serializable network description.

Every stage reads and writes this: the frontend builds a float `Network` from a checkpoint, the
passes rewrite it (folding tdBN, MPR and decay_input, then quantization to a fixed-point `Network`),
and every backend executes the fixed-point form. The on-disk form is documented in docs/ir.md:
`network.json` (structure and scalars) next to `network.npz` (arrays), with a format version.

Semantics of one node per time step (float arithmetic; the fixed-point rules are in
snnc/execute.py and docs/ir.md):
    z = op(inputs)                              conv2d (stride, padding, dilation, groups) / linear (+ op bias),
                                                sumpool, avgpool, flatten, add
    z = op(inputs delayed)                      with node.delay: input element j read at t - delay[j]
    z = bn.scale * z + bn.shift                 if bn (per channel; removed by fold_bn)
    z = z + recurrent @ flatten(O[t - 1])       with node.recurrent: the population's own spikes (O[-1] = 0)
    I = (1 - u_decay) * I + z                   synaptic current (u_decay = 1: no current memory)
    H = (1 - v_decay) * U + input_gain * I + neuron.bias
    O = phi(H) >= threshold  (phi = MPR if neuron.mpr else identity)
    U = H * (1 - O) (hard) | H - reset_amount * O (soft) | H (integrator)
A sigma-delta population (kind 'sigma_delta', fixed point only: lava-dl's SDNN) sends graded
messages instead: sigma = sigma + (z << input_shift) (or z << input_shift alone where it does not
accumulate), act = relu?(sigma + bias), delta = act - act_before + residue, sent = delta where
|delta| >= threshold else 0, residue = delta - sent, message = sent >> message_shift
(snnc.fixedpoint.sigma_delta_step).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import numbers
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from snnc.errors import InputError
from snnc.targets import arithmetic_problem, is_integer

FORMAT_VERSION = 1
OPS = ("input", "conv2d", "linear", "avgpool", "sumpool", "flatten", "add")
SYNAPTIC_OPS = ("conv2d", "linear")
NEURON_KINDS = ("spiking", "integrator", "sigma_delta")
EVENT_KINDS = ("spiking", "sigma_delta")   # populations whose outputs are events other nodes read
ACTIVATIONS = ("identity", "relu")
RESETS = ("hard", "soft", "none")
READOUTS = ("mean", "last")
ENCODING_KINDS = ("direct", "spikes")
OPTIONAL_ARRAYS = ("recurrent", "delay")   # Node arrays that files before them lack (absent = None)
# Neuron fields that files before them lack: written only where they differ from their default
LATER_NEURON_FIELDS = ("max_spikes", "input_shift", "activation", "accumulate", "message_shift")

# Limits on what one network may ask for (docs/errors.md, "Limits"). Frontends check them against
# the numbers a file states before allocating anything, so that a small file cannot claim gigabytes.
MAX_T = 100_000                 # time steps per sample
MAX_LAYER_SIZE = 1 << 24        # values in one node's per-sample output: neurons, input elements
MAX_LAYER_WEIGHTS = 1 << 28     # weights of one conv2d or linear node, or of one recurrent matrix
MAX_DELAY = 1_000               # steps of axonal delay of one input element (node.delay)
MAX_SPIKES_PER_STEP = 255       # a multi-spike neuron's count per step (Neuron.max_spikes): traces hold uint8


def check_steps(T, where: str) -> int:
    """T as an int, if it is an integer in 1..MAX_T."""
    if not is_integer(T):
        raise InputError(f"{where}: T must be an integer, got {T!r}")
    if not 1 <= T <= MAX_T:
        raise InputError(f"{where}: T = {T} is outside 1..{MAX_T} (the limit on time steps)")
    return int(T)


def check_shape(shape, where: str) -> tuple[int, ...]:
    """A per-sample shape as a tuple, if it is 1 to 3 positive integers with at most
    MAX_LAYER_SIZE values in all."""
    if not isinstance(shape, (tuple, list)) or not 1 <= len(shape) <= 3 or not all(is_integer(d) for d in shape):
        raise InputError(f"{where}: shape {shape!r} is not 1 to 3 integers")
    if any(d < 1 for d in shape):
        raise InputError(f"{where}: shape {list(shape)} has an empty dimension")
    size = math.prod(int(d) for d in shape)
    if size > MAX_LAYER_SIZE:
        raise InputError(f"{where}: shape {list(shape)} holds {size} values, above the limit of "
                         f"{MAX_LAYER_SIZE} per layer")
    return tuple(int(d) for d in shape)


def check_weight_count(count: int, where: str) -> None:
    """Refuse a layer with more than MAX_LAYER_WEIGHTS weights."""
    if count > MAX_LAYER_WEIGHTS:
        raise InputError(f"{where}: {count} weights, above the limit of {MAX_LAYER_WEIGHTS} per layer")


def _int_pair(value, what: str, where: str, low: int = 1) -> tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(is_integer(v) for v in value)) \
            or min(value) < low:
        raise InputError(f"{where}: {what} must be two integers >= {low}, got {value!r}")
    return int(value[0]), int(value[1])


def conv_dilation(attrs: dict) -> tuple[int, int]:
    """A conv2d's dilation (attrs 'dilation', default [1, 1]): kernel taps dilation steps apart."""
    return tuple(int(d) for d in attrs.get("dilation", (1, 1)))


def conv_groups(attrs: dict) -> int:
    """A conv2d's groups (attrs 'groups', default 1): output channel block g reads input block g only."""
    return int(attrs.get("groups", 1))


def conv_output_shape(source: tuple[int, ...], out_channels: int, kernel, stride, padding,
                      where: str, dilation=(1, 1), groups=1) -> tuple[int, ...]:
    """(C, H, W) of a conv2d on `source`, checked (kernel, stride and dilation >= 1, padding >= 0,
    groups dividing both channel counts, the output neither empty nor above the limits) before
    anything of that size exists."""
    if len(source) != 3:
        raise InputError(f"{where}: a conv2d needs a (C, H, W) input, got {list(source)}")
    (kh, kw), (sh, sw) = _int_pair(kernel, "kernel", where), _int_pair(stride, "stride", where)
    ph, pw = _int_pair(padding, "padding", where, low=0)
    dh, dw = _int_pair(dilation, "dilation", where)
    if not is_integer(groups) or groups < 1 or source[0] % groups or int(out_channels) % groups:
        raise InputError(f"{where}: groups {groups!r} must be an integer >= 1 dividing the {source[0]} input "
                         f"and {out_channels} output channels")
    height = (source[1] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    width = (source[2] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    shape = check_shape((int(out_channels), height, width), where)
    check_weight_count(int(out_channels) * (source[0] // int(groups)) * kh * kw, where)
    return shape


def pool_output_shape(source: tuple[int, ...], kernel, stride, where: str) -> tuple[int, ...]:
    """(C, H, W) of a square pool without padding on `source`, checked like conv_output_shape."""
    if not (is_integer(kernel) and is_integer(stride)) or kernel < 1 or stride < 1:
        raise InputError(f"{where}: pool kernel and stride must be integers >= 1, got {kernel!r}, {stride!r}")
    if len(source) != 3:
        raise InputError(f"{where}: a pool needs a (C, H, W) input, got {list(source)}")
    return check_shape((source[0], (source[1] - kernel) // stride + 1, (source[2] - kernel) // stride + 1), where)


def _finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def encoding_problem(encoding, needs_scale: bool = True) -> Optional[str]:
    """What is wrong with an input encoding (docs/ir.md), or None. A fixed-point network runs on the
    integer inputs alone: its scale (the real value of one unit) may be absent, not wrong."""
    if not isinstance(encoding, dict):
        return f"the encoding must be a mapping, got {encoding!r}"
    kind = encoding.get("kind", "direct")   # the executors' default
    if kind not in ENCODING_KINDS:
        return f"encoding kind must be one of {ENCODING_KINDS}, got {kind!r}"
    scale = encoding.get("scale")
    if (needs_scale or scale is not None) and not (_finite_number(scale) and scale > 0):
        return f"the input scale must be a finite number > 0, got {scale!r}"
    if not is_integer(encoding.get("max")) or encoding["max"] < 1:
        return f"the encoding's max must be a positive integer, got {encoding.get('max')!r}"
    low = encoding.get("min", 0)
    if not is_integer(low) or low > 0:
        return f"the encoding's min must be an integer <= 0, got {low!r}"
    threshold = encoding.get("threshold")
    if kind == "spikes" and not _finite_number(threshold):
        return f"a spike encoding needs a numeric threshold, got {threshold!r}"
    present = encoding.get("present_steps")
    if present is not None and not (is_integer(present) and present >= 1):
        return f"present_steps must be a positive integer, got {present!r}"
    transform = encoding.get("pixel_transform")
    if transform is not None and not (isinstance(transform, dict) and set(transform) == {"weight", "bias"}
                                      and all(is_integer(v) for v in transform.values())):
        return f"pixel_transform must be integers {{weight, bias}}, got {transform!r}"
    return None


@dataclass
class Affine:
    """A per-channel affine map y = scale * x + shift: a batch norm at inference."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass
class Neuron:
    """Per-neuron parameters, each array shaped like the node's per-sample output.

    In a float network decays are fractions lost per step (v_decay = 1/tau for LIF, 0 for IF;
    u_decay = 1 means the current has no memory). In a fixed-point network they are the hardware
    registers dv and du of Loihi's CUBA neuron: v keeps (unit - dv)/unit, u keeps
    (unit - du - 1)/unit, unit = 2**decay_bits of the network's arithmetic (snnc.fixedpoint).
    max_spikes > 1: the population fires a count per step, min(floor(H / threshold), max_spikes)
    where H >= threshold (Sinabs' MultiSpike, Rockpool), and a soft reset subtracts the count times
    reset_amount; its consumers read the counts as graded input.
    input_shift: the fixed-point input enters as x << input_shift (None: the arithmetic's
    activation_shift; Lava's Sigma readout takes x as it is). The sigma-delta fields (kind
    'sigma_delta', docstring of this module): activation on sigma + bias, accumulate (sigma sums
    its input, Lava's SigmaDelta; or is the input, Lava's Delta encoder), message_shift; threshold
    is the delta threshold and bias is in the units of sigma.
    """

    kind: str
    threshold: Optional[np.ndarray]
    reset: str
    reset_amount: Optional[np.ndarray]
    bias: np.ndarray
    initial_state: np.ndarray
    v_decay: float = 0.0
    u_decay: float = 1.0
    input_gain: float = 1.0
    mpr: bool = False
    max_spikes: int = 1
    input_shift: Optional[int] = None
    activation: str = "identity"
    accumulate: bool = True
    message_shift: int = 0

    @property
    def graded(self) -> bool:
        """Whether the population sends values rather than binary spikes (counts or sigma-delta messages)."""
        return self.kind == "sigma_delta" or self.max_spikes > 1


@dataclass
class Node:
    """One operation, optionally followed by a batch norm and a neuron population."""

    name: str
    op: str
    inputs: list[str]
    shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    weight: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    bn: Optional[Affine] = None
    neuron: Optional[Neuron] = None
    scale: Optional[np.ndarray] = None
    recurrent: Optional[np.ndarray] = None
    delay: Optional[np.ndarray] = None

    @property
    def spiking(self) -> bool:
        """Whether the node's neurons send events (spikes, counts or sigma-delta messages)."""
        return self.neuron is not None and self.neuron.kind in EVENT_KINDS

    @property
    def delayed(self) -> bool:
        """Whether some input element reaches the op later than the step it was produced in."""
        return self.delay is not None and bool(np.any(self.delay))


@dataclass
class Network:
    """A whole SNN: nodes in topological order, the last one the readout integrator.

    `arithmetic` is {"kind": "float"} or the fixed-point rules copied from the target at
    quantization time (so executing a fixed network needs no target file).
    """

    name: str
    T: int
    readout: str
    nodes: list[Node]
    arithmetic: dict = field(default_factory=lambda: {"kind": "float"})
    encoding: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    @property
    def fixed(self) -> bool:
        return self.arithmetic["kind"] == "fixed"

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        return [node for node in self.nodes if name in node.inputs]

    @property
    def input_node(self) -> Node:
        return self.nodes[0]

    @property
    def output_node(self) -> Node:
        return self.nodes[-1]

    def spiking_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.spiking]

    def copy(self) -> "Network":
        return _from_parts(*_to_parts(self))

    def validate(self) -> None:
        """Check structure, shapes (each node's against its op, inputs and weights), limits, the
        encoding and the arithmetic; raises InputError naming the node."""
        where = f"network '{self.name}'"
        check_steps(self.T, where)
        if self.readout not in READOUTS:
            raise InputError(f"{where}: readout must be one of {READOUTS}")
        problem = encoding_problem(self.encoding, needs_scale=not self.fixed)
        if problem:
            raise InputError(f"{where}: {problem}")
        kind = self.arithmetic.get("kind") if isinstance(self.arithmetic, dict) else None
        if kind not in ("float", "fixed"):
            raise InputError(f"{where}: arithmetic kind must be 'float' or 'fixed', got {kind!r}")
        problem = arithmetic_problem(self.arithmetic) if kind == "fixed" else None
        if problem:
            raise InputError(f"{where}: {problem}")
        if not isinstance(self.metadata, dict):
            raise InputError(f"{where}: metadata must be a mapping")
        if not self.nodes or self.nodes[0].op != "input" or self.output_node.neuron is None \
                or self.output_node.neuron.kind != "integrator":
            raise InputError(f"{where}: must start with an input and end with a readout")
        shapes: dict[str, tuple[int, ...]] = {}
        for node in self.nodes:
            _validate_node(node, shapes, self)
            shapes[node.name] = tuple(node.shape)


def _expected_shape(node: Node, shapes: dict[str, tuple[int, ...]], where: str) -> tuple[int, ...]:
    """The output shape that a node's op, input shapes and weights give."""
    sources = [shapes[name] for name in node.inputs]
    if node.op == "input":
        if sources or shapes:
            raise InputError(f"{where}: the input must be the first node and has no inputs")
        return check_shape(node.shape, where)
    if node.op == "add":
        if not sources or len(set(sources)) != 1:
            raise InputError(f"{where}: an add needs inputs of one shape, got {[list(s) for s in sources]}")
        return sources[0]
    if len(sources) != 1:
        raise InputError(f"{where}: {node.op} takes one input, it has {len(sources)}")
    source, attrs = sources[0], node.attrs
    if node.op == "flatten":
        return (math.prod(source),)
    if node.op in ("avgpool", "sumpool"):
        return pool_output_shape(source, attrs.get("kernel"), attrs.get("stride"), where)
    weight = node.weight
    if node.op == "linear":
        if weight.ndim != 2 or len(source) != 1 or weight.shape[1] != source[0]:
            raise InputError(f"{where}: linear weight {list(weight.shape)} does not fit its input {list(source)}")
        return (int(weight.shape[0]),)
    groups = attrs.get("groups", 1)
    if weight.ndim != 4 or len(source) != 3 or not is_integer(groups) or weight.shape[1] * groups != source[0]:
        raise InputError(f"{where}: conv2d weight {list(weight.shape)} (groups {groups!r}) does not fit its input "
                         f"{list(source)}")
    if list(attrs.get("kernel", [])) != list(weight.shape[2:]):
        raise InputError(f"{where}: kernel {attrs.get('kernel')!r} differs from the weight's {list(weight.shape[2:])}")
    return conv_output_shape(source, weight.shape[0], attrs.get("kernel"), attrs.get("stride"),
                             attrs.get("padding"), where, attrs.get("dilation", (1, 1)), groups)


def _validate_node(node: Node, shapes: dict[str, tuple[int, ...]], net: Network) -> None:
    where = f"node '{node.name}'"
    if node.op not in OPS:
        raise InputError(f"{where}: unknown op {node.op!r}")
    if node.name in shapes:
        raise InputError(f"{where}: duplicate name")
    if not isinstance(node.attrs, dict):
        raise InputError(f"{where}: attrs must be a mapping")
    for name in node.inputs:
        if name not in shapes:
            raise InputError(f"{where}: input '{name}' is not an earlier node")
    if node.op in SYNAPTIC_OPS and node.weight is None:
        raise InputError(f"{where}: {node.op} without weights")
    arrays = [(getattr(node, name), name) for name in ("weight", "bias", "scale")]
    if node.bn is not None:
        arrays += [(node.bn.scale, "batch-norm scale"), (node.bn.shift, "batch-norm shift")]
    for array, name in arrays:
        if array is not None and (not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf"):
            raise InputError(f"{where}: {name} must be a numeric array")
    expected = _expected_shape(node, shapes, where)
    if tuple(node.shape) != expected:
        raise InputError(f"{where}: shape {list(node.shape)} does not match its op and inputs, "
                         f"which give {list(expected)}")
    for array, name in arrays:
        if array is None:
            continue
        if name != "weight" and tuple(array.shape) != (node.shape[0],):
            raise InputError(f"{where}: {name} of shape {list(array.shape)} is not one value per channel "
                             f"({node.shape[0]})")
        if not np.all(np.isfinite(array)):
            raise InputError(f"{where}: {name} contains NaN or Inf")
    if node.neuron is not None:
        _validate_neuron(node, net, where)
    if node.recurrent is not None:
        _validate_recurrent(node, net, where)
    if node.delay is not None:
        _validate_delay(node, shapes, where)


def _validate_recurrent(node: Node, net: Network, where: str) -> None:
    """recurrent: [N, N] finite weights of a spiking population onto itself (integers once fixed)."""
    recurrent, size = node.recurrent, math.prod(node.shape)
    if node.neuron is None or node.neuron.kind != "spiking":
        raise InputError(f"{where}: recurrent weights need a spiking (not sigma-delta) neuron population on the node")
    if not isinstance(recurrent, np.ndarray) or recurrent.dtype.kind not in "iuf":
        raise InputError(f"{where}: recurrent weights must be a numeric array")
    if tuple(recurrent.shape) != (size, size):
        raise InputError(f"{where}: recurrent weights of shape {list(recurrent.shape)} are not "
                         f"[{size}, {size}] (neurons x neurons)")
    check_weight_count(recurrent.size, where)
    if not np.all(np.isfinite(recurrent)):
        raise InputError(f"{where}: recurrent weights contain NaN or Inf")
    if net.fixed and not np.array_equal(recurrent, np.round(recurrent)):
        raise InputError(f"{where}: recurrent weights of a fixed-point network must be integers")


def _validate_delay(node: Node, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """delay: integers 0..MAX_DELAY, one per element of a conv2d's or linear's per-sample input."""
    delay = node.delay
    if node.op not in SYNAPTIC_OPS:
        raise InputError(f"{where}: only a conv2d or linear may delay its input, not a {node.op}")
    if not isinstance(delay, np.ndarray) or delay.dtype.kind not in "iu":
        raise InputError(f"{where}: delays must be an integer array")
    source = shapes[node.inputs[0]]
    if tuple(delay.shape) != source:
        raise InputError(f"{where}: delays of shape {list(delay.shape)} are not one per input element "
                         f"{list(source)}")
    if delay.size and not 0 <= int(delay.min()) <= int(delay.max()) <= MAX_DELAY:
        raise InputError(f"{where}: delays must lie in 0..{MAX_DELAY} steps, got {int(delay.min())}.."
                         f"{int(delay.max())}")


def _validate_spike_count(neuron: Neuron, where: str) -> None:
    """max_spikes: 1, or up to MAX_SPIKES_PER_STEP for a spiking population with positive
    thresholds and no MPR (the count divides the membrane by the threshold)."""
    count = neuron.max_spikes
    if not is_integer(count) or not 1 <= count <= MAX_SPIKES_PER_STEP:
        raise InputError(f"{where}: max_spikes must be an integer in 1..{MAX_SPIKES_PER_STEP}, got {count!r}")
    if count == 1:
        return
    if neuron.kind != "spiking" or neuron.mpr:
        raise InputError(f"{where}: several spikes per step (max_spikes {count}) need a spiking population "
                         f"without MPR")
    if not np.all(neuron.threshold > 0):
        raise InputError(f"{where}: several spikes per step (max_spikes {count}) need thresholds above 0")


def _validate_shifts(neuron: Neuron, net: Network, where: str) -> None:
    """input_shift (any fixed population) and the sigma-delta fields: a sigma-delta population is
    fixed point, without reset, MPR or counts, with thresholds >= 0 and shifts within the registers."""
    top = net.arithmetic.get("state_bits", 32) if net.fixed else 32
    shifts = {"input_shift": neuron.input_shift, "message_shift": neuron.message_shift}
    for name, value in shifts.items():
        if value is not None and not (is_integer(value) and 0 <= value < top):
            raise InputError(f"{where}: neuron {name} must be an integer in 0..{top - 1}, got {value!r}")
    if neuron.kind != "sigma_delta":
        if neuron.input_shift is not None and not net.fixed:
            raise InputError(f"{where}: input_shift is a fixed-point register rule; the network is float")
        if (neuron.activation, neuron.accumulate, neuron.message_shift) != ("identity", True, 0):
            raise InputError(f"{where}: activation, accumulate and message_shift belong to sigma-delta neurons")
        return
    if not net.fixed:
        raise InputError(f"{where}: sigma-delta neurons are defined in fixed point only")
    if neuron.reset != "none" or neuron.mpr or neuron.max_spikes != 1 or neuron.input_shift is None:
        raise InputError(f"{where}: a sigma-delta population has reset 'none', no MPR, max_spikes 1 and an "
                         f"input_shift")
    if neuron.activation not in ACTIVATIONS or not isinstance(neuron.accumulate, bool):
        raise InputError(f"{where}: sigma-delta activation must be one of {ACTIVATIONS} and accumulate a boolean")
    if not np.all(neuron.threshold >= 0):
        raise InputError(f"{where}: sigma-delta thresholds must be >= 0")


def _validate_neuron(node: Node, net: Network, where: str) -> None:
    neuron = node.neuron
    if neuron.kind not in NEURON_KINDS or neuron.reset not in RESETS:
        raise InputError(f"{where}: bad neuron kind/reset")
    arrays = [neuron.bias, neuron.initial_state]
    if neuron.kind in EVENT_KINDS:
        arrays.append(neuron.threshold)
    if neuron.reset == "soft":
        arrays.append(neuron.reset_amount)
    for array in arrays:
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf" \
                or tuple(array.shape) != tuple(node.shape):
            raise InputError(f"{where}: neuron parameter shape does not match {list(node.shape)}")
        if not np.all(np.isfinite(array)):
            raise InputError(f"{where}: neuron parameters contain NaN or Inf")
    for name in ("v_decay", "u_decay", "input_gain"):
        value = getattr(neuron, name)
        if not _finite_number(value):
            raise InputError(f"{where}: neuron {name} must be a finite number, got {value!r}")
    _validate_spike_count(neuron, where)
    _validate_shifts(neuron, net, where)
    if net.fixed and neuron.kind != "sigma_delta":   # a sigma-delta population has no decays
        unity = 2 ** net.arithmetic["decay_bits"]
        if not (is_integer(neuron.v_decay) and 0 <= neuron.v_decay <= unity
                and is_integer(neuron.u_decay) and -1 <= neuron.u_decay < unity):
            raise InputError(f"{where}: decay registers v_decay {neuron.v_decay!r}, u_decay {neuron.u_decay!r} "
                             f"are not integers within the {net.arithmetic['decay_bits']}-bit range")


# --- on-disk form ---------------------------------------------------------------------------

def _to_parts(net: Network) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}

    def keep(key: str, value):
        if isinstance(value, np.ndarray):
            arrays[key] = value
            return {"array": key}
        return value

    nodes = []
    for node in net.nodes:
        entry = {"name": node.name, "op": node.op, "inputs": list(node.inputs),
                 "shape": list(node.shape), "attrs": node.attrs}
        for name in ("weight", "bias", "scale"):
            entry[name] = keep(f"{node.name}/{name}", getattr(node, name))
        for name in OPTIONAL_ARRAYS:   # written only where present: older files lack them
            if getattr(node, name) is not None:
                entry[name] = keep(f"{node.name}/{name}", getattr(node, name))
        entry["bn"] = None if node.bn is None else {
            "scale": keep(f"{node.name}/bn.scale", node.bn.scale),
            "shift": keep(f"{node.name}/bn.shift", node.bn.shift)}
        if node.neuron is None:
            entry["neuron"] = None
        else:
            entry["neuron"] = {f.name: keep(f"{node.name}/neuron.{f.name}", getattr(node.neuron, f.name))
                               for f in dataclasses.fields(Neuron)
                               if f.name not in LATER_NEURON_FIELDS or getattr(node.neuron, f.name) != f.default}
        nodes.append(entry)
    doc = {"format": "snnc-ir", "format_version": FORMAT_VERSION, "name": net.name, "T": net.T,
           "readout": net.readout, "arithmetic": net.arithmetic, "encoding": net.encoding,
           "metadata": net.metadata, "nodes": nodes}
    return doc, arrays


def _from_parts(doc: dict, arrays: dict[str, np.ndarray]) -> Network:
    def take(value):
        if isinstance(value, dict) and set(value) == {"array"}:
            return np.array(arrays[value["array"]], copy=True)
        return value

    nodes = []
    for entry in doc["nodes"]:
        bn = entry["bn"]
        neuron = entry["neuron"]
        nodes.append(Node(
            name=entry["name"], op=entry["op"], inputs=list(entry["inputs"]),
            shape=tuple(entry["shape"]), attrs=dict(entry["attrs"]),
            weight=take(entry["weight"]), bias=take(entry["bias"]), scale=take(entry["scale"]),
            recurrent=take(entry.get("recurrent")), delay=take(entry.get("delay")),
            bn=None if bn is None else Affine(take(bn["scale"]), take(bn["shift"])),
            neuron=None if neuron is None else Neuron(**{k: take(v) for k, v in neuron.items()}),
        ))
    return Network(name=doc["name"], T=doc["T"], readout=doc["readout"], nodes=nodes,
                   arithmetic=dict(doc["arithmetic"]), encoding=dict(doc["encoding"]),
                   metadata=dict(doc["metadata"]))


def deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend only on the arrays (numpy's savez stamps the time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def save(net: Network, directory: Path) -> list[Path]:
    """Write network.json and network.npz into `directory`; returns the paths written."""
    doc, arrays = _to_parts(net)
    directory = Path(directory)
    json_path, npz_path = directory / "network.json", directory / "network.npz"
    json_path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    npz_path.write_bytes(deterministic_npz(arrays))
    return [json_path, npz_path]


def _check_npz_sizes(path: Path) -> None:
    """Read only the headers of an npz's arrays: a compressed member claiming more values than any
    layer may hold is refused before it is inflated (deflate turns a megabyte into a gigabyte)."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, _ = read_header(member)
            if math.prod(shape) > MAX_LAYER_WEIGHTS:
                raise InputError(f"{path}: array {info.filename} of shape {list(shape)} holds more than "
                                 f"{MAX_LAYER_WEIGHTS} values, the limit per layer")


def load(directory: Path) -> Network:
    """Read a network saved by `save`; raises InputError on a missing or malformed file."""
    directory = Path(directory)
    try:
        doc = json.loads((directory / "network.json").read_text(encoding="utf-8"))
        _check_npz_sizes(directory / "network.npz")
        with np.load(directory / "network.npz", allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as error:
        raise InputError(f"{directory}: not an snnc network ({Path(error.filename).name} missing)")
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{directory}: unreadable network files ({error})")
    if not isinstance(doc, dict):
        raise InputError(f"{directory}: network.json is not a JSON object")
    if doc.get("format") != "snnc-ir" or doc.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{directory}: network format {doc.get('format')!r} version "
                         f"{doc.get('format_version')!r} is not snnc-ir version {FORMAT_VERSION}")
    try:
        net = _from_parts(doc, arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{directory}: malformed network.json ({type(error).__name__}: {error})")
    net.validate()
    if net.fixed and not isinstance(net.metadata.get("target"), str):
        raise InputError(f"{directory}: the fixed-point network does not name the target it was compiled for "
                         f"(metadata 'target')")
    return net
