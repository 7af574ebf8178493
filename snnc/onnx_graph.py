"""Building ONNX graphs from snnc networks (docs/onnx.md explains the layout and why it is exact).

Three graphs come out of one network:
- `fixed_model(net)`: the quantized network over all T steps (model.onnx). Synaptic ops run on the
  time-merged [T*batch, ...] tensor (axonal delays are one GatherElements along time before the
  op), then each neuron layer's recurrence is unrolled over T (recurrent synapses: a MatMul of the
  previous step's spikes inside the unrolled loop).
- `fixed_model(net, stepwise=True)`: one time step with every neuron state as an input and an
  output (model_step.onnx), recurrent layers' last spikes and delayed inputs' recent history
  included.
- `float_model(folded_net)`: the folded float network in float32 (model_float.onnx), approximate.

Exactness of the fixed graphs: every synaptic op (conv, linear, sum pool, add of spikes) runs in
float32 on integer-valued tensors, and every partial sum it can form is bounded by
sum(|w|) * (largest input) per output channel. While that bound stays below 2^24 every partial sum
is an integer that float32 represents exactly, so the result is exact whatever order or blocking
the runtime uses. A weight matrix whose bound reaches 2^24 is split into digit planes
(w = sum_i plane_i * base^i) that each stay below it, and the planes' results are combined in int64.
Neuron state (u, v), decays, wraps, saturations, thresholds, spike counts and resets run in int64,
built from snnc.fixedpoint's registers and rules (the decay unit 2**decay_bits and the state width
come from the network's arithmetic). A multi-spike population (max_spikes M > 1) outputs its count
0..M where a binary one outputs a bool; the synapses reading it bound their inputs by M
(quantize.largest_outputs), which the float32 exactness bound above uses. A sigma-delta population
(fixedpoint.sigma_delta_step) runs sigma, act and residue in int64 and outputs signed int32 messages,
which can be large: where even 1-bit weight planes would reach 2^24 with them, the synapse also
splits its input into digits (split_sum), one float32 op per (digit, plane) pair.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snnc import __version__, fixedpoint
from snnc.errors import DesignRuleError, InputError
from snnc.ir import Network, Node, conv_dilation, conv_groups
from snnc.passes.quantize import largest_outputs

OPSET = 17
IR_VERSION = 8
PRODUCER = "snnc"
INPUT = "input"
READOUT = "readout"
READOUT_STEPS = "readout_steps"
READOUT_STEP = "readout_step"
BATCH = "batch"
STATE_BATCH = "state_batch"  # model_step.onnx's state inputs: batch, or 1 for the default initial state
FLOAT32_EXACT = 2 ** 24   # float32 holds every integer of magnitude up to 2^24 exactly

_ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
              np.dtype(np.int32): TensorProto.INT32, np.dtype(np.uint8): TensorProto.UINT8,
              np.dtype(np.bool_): TensorProto.BOOL}


def neuron_states(node: Node) -> list[tuple[str, str, np.ndarray]]:
    """A neuron layer's registers in model_step.onnx as (input name, output name, value before the
    first step, int64 [1, *shape]): u = 0 and v = the initial state of a CUBA layer; sigma = the
    initial state, act = 0 and residue = 0 of a sigma-delta layer (fixedpoint.sigma_delta_step)."""
    shape = (1,) + tuple(node.shape)
    zeros = np.zeros(shape, np.int64)
    initial = np.asarray(node.neuron.initial_state, np.int64).reshape(shape)
    registers = {"sigma": initial, "act": zeros, "residue": zeros} if node.neuron.kind == "sigma_delta" \
        else {"u": zeros, "v": initial}
    return [(f"state.{node.name}.{register}", f"next.{node.name}.{register}", value)
            for register, value in registers.items()]


def extra_states(net: Network) -> list[tuple[str, str, np.dtype, tuple[int, ...]]]:
    """model_step.onnx's states beyond u and v, all zero before the first step, as (input name,
    output name, dtype, per-sample shape): a recurrent layer's spikes (counts) of the previous step
    (`.spikes`, uint8, the layer's shape) and a delayed synapse's last D input steps (`.delay`,
    float32 holding integers, [D, input elements], oldest first; D = the largest delay)."""
    states = []
    for node in net.nodes:
        if node.recurrent is not None:
            states.append((f"state.{node.name}.spikes", f"next.{node.name}.spikes", np.dtype(np.uint8),
                           tuple(node.shape)))
        if node.delayed:
            states.append((f"state.{node.name}.delay", f"next.{node.name}.delay", np.dtype(np.float32),
                           (int(node.delay.max()), int(node.delay.size))))
    return states


class _Builder:
    """Accumulates nodes and initializers with deterministic, unique names."""

    def __init__(self, reserved: set[str]):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.taken = set(reserved)
        self.constants: dict[tuple, str] = {}
        self.count = 0

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.taken:
            k += 1
            name = f"{hint}~{k}"
        self.taken.add(name)
        return name

    def array(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def integers(self, value: np.ndarray, dtype, hint: str, scope: str) -> str:
        """An integer-valued constant of `dtype` stored in the narrowest integer type that holds it,
        followed by a Cast (onnxruntime folds the Cast once, at session creation): files shrink up
        to 4x (8-bit weights) or 8x (int64 neuron parameters) and the values are unchanged."""
        value = np.asarray(value)
        exact = value.astype(np.int64)
        if not np.array_equal(exact, value):
            raise ValueError(f"{hint}: not integer-valued")
        for small in (np.int8, np.int16, np.int32):
            info = np.iinfo(small)
            if exact.size == 0 or (exact.min() >= info.min and exact.max() <= info.max):
                stored = self.array(exact.astype(small), hint + ".stored")
                return self.op("Cast", [stored], scope, outputs=[self.fresh(hint)], to=_ONNX_TYPE[np.dtype(dtype)])
        return self.array(exact.astype(dtype), hint)

    def const(self, value, dtype) -> str:
        """A (deduplicated) constant: scalars and small shape vectors."""
        value = np.asarray(value, dtype=dtype)
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self.constants:
            text = "_".join(str(v) for v in value.ravel()) if value.size else "empty"
            self.constants[key] = self.array(value, f"const.{value.dtype.name}.{text}")
        return self.constants[key]

    def op(self, op_type: str, inputs: list[str], scope: str, outputs: int | list[str] = 1,
           **attrs) -> str | list[str]:
        self.count += 1
        if isinstance(outputs, int):
            names = [self.fresh(f"{scope}/{op_type}_{self.count}" + (f":{i}" if outputs > 1 else ""))
                     for i in range(outputs)]
        else:
            names = list(outputs)
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{scope}/{op_type}_{self.count}",
                                           **attrs))
        return names[0] if len(names) == 1 else names


def _value_info(name: str, dtype, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _ONNX_TYPE[np.dtype(dtype)], list(shape))


def _model(builder: _Builder, name: str, doc: str, inputs, outputs, metadata: dict) -> onnx.ModelProto:
    graph = helper.make_graph(builder.nodes, name, inputs, outputs, builder.initializers, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version=__version__, doc_string=doc)
    model.ir_version = IR_VERSION
    for key in sorted(metadata):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(metadata[key])
    return model


def _check_names(net: Network, reserved: set[str]) -> None:
    for node in net.spiking_nodes():
        if node.name in reserved or node.name.startswith(("state.", "next.", "const.")):
            raise InputError(f"layer '{node.name}': its name clashes with a reserved ONNX tensor name")


def _partial_sum_bound(weight: np.ndarray, in_max: int) -> int:
    magnitude = np.abs(weight.astype(np.int64)).reshape(weight.shape[0], -1).sum(axis=1)
    return int(magnitude.max()) * int(in_max) if magnitude.size else 0


def weight_planes(weight: np.ndarray, in_max: int, limit: int = FLOAT32_EXACT) -> list[tuple[np.ndarray, int]]:
    """Split integer weights into (plane, factor) pairs, w = sum(plane * factor), such that every
    plane's partial sums stay below `limit`; a single plane when the weights already do."""
    weight = np.asarray(weight, dtype=np.int64)
    if _partial_sum_bound(weight, in_max) < limit:
        return [(weight, 1)]
    sign, rest0 = np.sign(weight), np.abs(weight)
    for bits in range(max(int(rest0.max()).bit_length() - 1, 1), 0, -1):
        base, rest, factor, planes = 1 << bits, rest0, 1, []
        while rest.any():
            plane = sign * (rest % base)
            if plane.any():
                planes.append((plane, factor))
            rest, factor = rest // base, factor * base
        if all(_partial_sum_bound(plane, in_max) < limit for plane, _ in planes):
            return planes
    raise DesignRuleError(f"a synapse's partial sums reach {_partial_sum_bound(weight, in_max)} even with "
                          f"1-bit weight planes: not exact in float32 (limit {limit})")


def split_sum(weight: np.ndarray, in_max: int,
              limit: int = FLOAT32_EXACT) -> tuple[int, int, list[tuple[np.ndarray, int]]]:
    """(digits, digit bits, weight planes): how to apply integer weights to inputs |x| <= in_max
    with every partial sum below `limit`: x written as `digits` signed digits of base 2^bits, each
    digit times each of weight_planes(weight, largest digit). One digit (x itself) wherever weight
    planes alone suffice; else the fewest digits that make them suffice (large graded inputs, such
    as sigma-delta messages)."""
    bits = max(int(in_max).bit_length(), 1)
    widths = sorted({-(-bits // digits) for digits in range(1, bits + 1)}, reverse=True)   # fewest digits first
    for width in widths[:-1]:
        try:
            return -(-bits // width), width, weight_planes(weight, min(int(in_max), (1 << width) - 1), limit)
        except DesignRuleError:
            pass
    return bits, 1, weight_planes(weight, min(int(in_max), 1), limit)   # raises where 1-bit digits fail too


def _conv_attributes(node: Node) -> dict:
    """ONNX Conv attributes of a conv2d node (stride, padding, dilation, groups)."""
    return {"kernel_shape": list(node.weight.shape[2:]), "strides": list(node.attrs["stride"]),
            "pads": list(node.attrs["padding"]) * 2, "dilations": list(conv_dilation(node.attrs)),
            "group": conv_groups(node.attrs)}


def _fire_and_reset(g: _Builder, reset: str, compare: str, v: str, threshold: str, reset_amount: str,
                    zero: str, scope: str, count: tuple[int, str, bool] | None = None) -> tuple[str, str]:
    """The spike decision and the reset, the same ops in the fixed and the float graph:
    returns (fired, v after reset); fired is bool for a binary population.

    `count` = (max_spikes, divisor, floor) for a multi-spike population: fired becomes the count
    (v's dtype), min(v / divisor, max_spikes) where v reached the threshold, else 0. Thresholds
    are validated positive where max_spikes > 1, so the fixed graph's fire level is at least 1:
    it is fixedpoint.spike_count's divisor max(fire level, 1), and where v >= fire level the
    int64 Div sees non-negative operands, where its truncation is spike_count's floor division.
    The float graph floors the float32 quotient by the threshold. The count is positive exactly
    where v reached the threshold: the hard reset keys on that comparison as after_reset keys on
    count > 0."""
    reached = g.op(compare, [v, threshold], scope)
    if count is None:
        fired = reached
        if reset == "soft":
            v = g.op("Where", [reached, g.op("Sub", [v, reset_amount], scope), v], scope)
    else:
        most, divisor, floor = count
        quotient = g.op("Div", [v, divisor], scope)
        if floor:
            quotient = g.op("Floor", [quotient], scope)
        capped = g.op("Min", [quotient, g.const(most, np.float32 if floor else np.int64)], scope)
        fired = g.op("Where", [reached, capped, zero], scope)
        if reset == "soft":
            v = g.op("Sub", [v, g.op("Mul", [fired, reset_amount], scope)], scope)
    if reset == "hard":
        v = g.op("Where", [reached, zero, v], scope)
    return fired, v


def _delayed_over_time(g: _Builder, x: str, node: Node, steps: int) -> str:
    """node.delay on x [steps*batch, *input shape] (float32): element j of step t read from step
    t - delay[j], zero before step 0. One GatherElements along time on the input padded with D
    zero steps in front (D = the largest delay, at most `steps`: a longer delay reads only zeros)."""
    scope, in_shape = node.name, list(node.delay.shape)
    delay = np.asarray(node.delay, np.int64).reshape(-1)
    depth = min(int(delay.max()), steps)
    by_step = g.op("Reshape", [x, g.const([steps, -1, delay.size], np.int64)], scope)
    padded = g.op("Pad", [by_step, g.const([depth, 0, 0, 0, 0, 0], np.int64)], scope)
    index = np.arange(steps)[:, None, None] + depth - np.minimum(delay, depth)[None, None, :]
    index = g.integers(index, np.int64, f"{scope}/delay_index", scope)
    index = g.op("Expand", [index, g.op("Shape", [by_step], scope)], scope)
    delayed = g.op("GatherElements", [padded, index], scope, axis=0)
    return g.op("Reshape", [delayed, g.const([-1] + in_shape, np.int64)], scope)


def _recurrent_float(g: _Builder, node: Node, fired: str) -> str:
    """The float model's recurrent input from one step's spikes (bool, or float32 counts [batch, *shape])."""
    spikes = g.op("Flatten", [g.op("Cast", [fired], node.name, to=TensorProto.FLOAT)], node.name, axis=1)
    weight = g.array(np.asarray(node.recurrent, np.float32).T, f"{node.name}/recurrent")
    flat = g.op("MatMul", [spikes, weight], node.name)
    return g.op("Reshape", [flat, g.const([-1] + list(node.shape), np.int64)], node.name)


class _FixedGraph:
    """The fixed-point network as ONNX ops over `steps` time steps."""

    def __init__(self, net: Network, stepwise: bool, spikes: bool, limit: int):
        self.net, self.stepwise, self.spikes, self.limit = net, stepwise, spikes, limit
        self.steps = 1 if stepwise else net.T
        self.arith = net.arithmetic
        self.top = fixedpoint.register_top(self.arith["state_bits"])
        self.decay_bits = self.arith["decay_bits"]
        reserved = {INPUT, READOUT, READOUT_STEPS, READOUT_STEP}
        _check_names(net, reserved)
        reserved |= {node.name for node in net.spiking_nodes()}
        for node in net.nodes:
            if node.neuron is not None:
                reserved |= {name for entry in neuron_states(node) for name in entry[:2]}
        self.extra_states = {entry[0]: entry for entry in extra_states(net)}
        reserved |= {name for entry in self.extra_states.values() for name in entry[:2]}
        self.g = _Builder(reserved)
        self.largest = largest_outputs(net)
        self.current_bound: dict[str, int] = {}  # largest |integer activation| of each synapse node
        self.inputs, self.outputs = [], []

    # --- helpers --------------------------------------------------------------------------------
    def _per_sample(self, node: Node, array, dtype, hint: str) -> str:
        """A per-neuron integer parameter as [1, *shape] (broadcast over the batch), or [1, C, 1, ...]
        when it is constant within each channel (as folded batch norms make thresholds and biases)."""
        array = np.asarray(array).reshape((1,) + tuple(node.shape))
        if array.ndim > 2:
            per_channel = array.reshape(array.shape[:2] + (-1,))[:, :, :1]
            if np.array_equal(np.broadcast_to(per_channel, array.reshape(array.shape[:2] + (-1,)).shape),
                              array.reshape(array.shape[:2] + (-1,))):
                array = per_channel.reshape(array.shape[:2] + (1,) * (array.ndim - 2))
        return self.g.integers(array, dtype, f"{node.name}/{hint}", node.name)

    def _split_steps(self, tensor: str, scope: str) -> list[str]:
        if self.steps == 1:
            return [tensor]
        return self.g.op("Split", [tensor], scope, outputs=self.steps, axis=0)

    def _merge_steps(self, tensors: list[str], scope: str) -> str:
        return tensors[0] if len(tensors) == 1 else self.g.op("Concat", tensors, scope, axis=0)

    def _limit(self, x: str, mode: str, scope: str) -> str:
        """fixedpoint.limited: the target's overflow rule on a state register."""
        g, top = self.g, self.top
        if fixedpoint.saturates(mode):
            low = g.op("Max", [x, g.const(-(top - 1), np.int64)], scope)
            return g.op("Min", [low, g.const(top - 1, np.int64)], scope)
        span = g.const(2 * top, np.int64)
        above = g.op("Greater", [x, g.const(top, np.int64)], scope)
        below = g.op("LessOrEqual", [x, g.const(-top, np.int64)], scope)
        lowered = g.op("Where", [above, g.op("Sub", [x, span], scope), x], scope)
        return g.op("Where", [below, g.op("Add", [x, span], scope), lowered], scope)

    def _decay(self, x: str, keep: int, scope: str) -> str | None:
        """fixedpoint.decayed, trunc(x * keep / unit), as sign(x) * ((|x| * keep) div unit): the
        division only ever sees non-negative operands, where every integer-division convention
        agrees. None means zero."""
        g, unit = self.g, fixedpoint.decay_unit(self.decay_bits)
        if keep == unit:
            return x
        if keep == 0:
            return None
        scaled = g.op("Mul", [g.op("Abs", [x], scope), g.const(keep, np.int64)], scope)
        quotient = g.op("Div", [scaled, g.const(unit, np.int64)], scope)
        return g.op("Mul", [g.op("Sign", [x], scope), quotient], scope)

    # --- synapses -------------------------------------------------------------------------------
    def _float_input(self, node: Node, values: dict[str, str]) -> str:
        name = node.inputs[0]
        if name not in values:
            raise InputError(f"layer '{node.name}': its input '{name}' is a synapse without neuron, "
                             "which only an add node with a neuron may consume")
        if self.largest[name] >= self.limit:
            raise DesignRuleError(f"layer '{node.name}': input values up to {self.largest[name]} are not "
                                  "exact in float32")
        return values[name]

    def _current(self, node: Node, values: dict[str, str]) -> str:
        """The integer activation (int64, [steps*batch, ...]) of a conv2d or linear node."""
        x = self._float_input(node, values)
        if node.delayed:
            x = self._delayed_step(node, x) if self.stepwise else _delayed_over_time(self.g, x, node, self.steps)
        self.current_bound[node.name] = _partial_sum_bound(node.weight, self.largest[node.inputs[0]])
        return self._exact_sum(node.op, x, node.weight, self.largest[node.inputs[0]], node, "weight")

    def _exact_sum(self, op: str, x: str, weight: np.ndarray, in_max: int, node: Node, hint: str) -> str:
        """Integer weights applied to the integer-valued float32 x (|x| <= in_max) by a conv2d
        (node's attrs) or a linear ([out, in] weights), exact: float32 on every (input digit,
        weight plane) pair of split_sum, combined in int64."""
        g, scope = self.g, node.name
        digits, digit_bits, planes = split_sum(weight, in_max, self.limit)
        xs = [x] if digits == 1 else self._digits(x, digits, digit_bits, scope)
        total = None
        for index, (plane, factor) in enumerate(planes):
            suffix = "" if len(planes) == 1 else f".plane{index}"
            if op == "conv2d":
                stored = g.integers(plane, np.float32, f"{scope}/{hint}{suffix}", scope)
            else:
                stored = g.integers(plane.T, np.float32, f"{scope}/{hint}{suffix}", scope)
            for position, digit in enumerate(xs):
                if op == "conv2d":
                    out = g.op("Conv", [digit, stored], scope, **_conv_attributes(node))
                else:
                    out = g.op("MatMul", [digit, stored], scope)
                out = g.op("Cast", [out], scope, to=TensorProto.INT64)
                scale = factor << (digit_bits * position)
                if scale != 1:
                    out = g.op("Mul", [out, g.const(scale, np.int64)], scope)
                total = out if total is None else g.op("Add", [total, out], scope)
        return total

    def _digits(self, x: str, digits: int, digit_bits: int, scope: str) -> list[str]:
        """x (float32 integers below 2^24) as signed digits of base 2^digit_bits, lowest first:
        sign(x) * (floor(|x| / base^j) mod base), the last without the mod, so x = sum digit_j * base^j.
        Exact in float32: scaling by a power of two, Floor and these integer products and
        differences all stay integers below 2^24."""
        g = self.g
        base = 1 << digit_bits
        sign, rest, out = g.op("Sign", [x], scope), g.op("Abs", [x], scope), []
        for _ in range(digits - 1):
            high = g.op("Floor", [g.op("Mul", [rest, g.const(1.0 / base, np.float32)], scope)], scope)
            low = g.op("Sub", [rest, g.op("Mul", [high, g.const(base, np.float32)], scope)], scope)
            out.append(g.op("Mul", [sign, low], scope))
            rest = high
        return out + [g.op("Mul", [sign, rest], scope)]

    def _state_input(self, name: str) -> str:
        """One of extra_states as a graph input with its zero default (model_step.onnx)."""
        _, _, dtype, shape = self.extra_states[name]
        self.g.initializers.append(numpy_helper.from_array(np.zeros((1,) + shape, dtype), name))
        self.inputs.append(_value_info(name, dtype, [STATE_BATCH] + list(shape)))
        return name

    def _state_output(self, name: str, value: str, scope: str) -> None:
        """The next value of one of extra_states, named as run_steps feeds it back."""
        _, output, dtype, shape = self.extra_states[name]
        self.g.op("Identity", [value], scope, outputs=[output])
        self.outputs.append(_value_info(output, dtype, [BATCH] + list(shape)))

    def _delayed_step(self, node: Node, x: str) -> str:
        """node.delay on one step x [batch, *input shape] with the last D steps as state: the
        history [batch, D, E] (oldest first) and x make D + 1 steps, element j is read D - delay[j]
        steps in, and the newest D steps are the next history."""
        g, scope = self.g, node.name
        delay = np.asarray(node.delay, np.int64).reshape(-1)
        depth = int(delay.max())
        state = self._state_input(f"state.{node.name}.delay")
        now = g.op("Reshape", [x, g.const([-1, 1, delay.size], np.int64)], scope)
        shape = g.op("Shape", [now], scope)
        steps = g.op("Concat", [g.op("Expand", [state, shape], scope), now], scope, axis=1)
        index = g.integers((depth - delay).reshape(1, 1, -1), np.int64, f"{scope}/delay_index", scope)
        delayed = g.op("GatherElements", [steps, g.op("Expand", [index, shape], scope)], scope, axis=1)
        newest = g.op("Slice", [steps, g.const([1], np.int64), g.const([depth + 1], np.int64),
                                g.const([1], np.int64)], scope)
        self._state_output(f"state.{node.name}.delay", newest, scope)
        return g.op("Reshape", [delayed, g.const([-1] + list(node.delay.shape), np.int64)], scope)

    def _recurrent_input(self, node: Node, fired: str) -> str:
        """recurrent @ one step's spikes (bool, or counts up to max_spikes: int64, uint8 from the
        state) [batch, *shape], int64 [batch, *shape], exact."""
        g, scope = self.g, node.name
        spikes = g.op("Flatten", [g.op("Cast", [fired], scope, to=TensorProto.FLOAT)], scope, axis=1)
        flat = self._exact_sum("linear", spikes, node.recurrent, node.neuron.max_spikes, node, "recurrent")
        return g.op("Reshape", [flat, g.const([-1] + list(node.shape), np.int64)], scope)

    def _plain(self, node: Node, values: dict[str, str]) -> str:
        """sumpool, flatten, add of spikes: float32 [steps*batch, ...] outputs."""
        g, scope = self.g, node.name
        if node.op == "sumpool":
            x = self._float_input(node, values)
            k, s = node.attrs["kernel"], node.attrs["stride"]
            channels = node.shape[0]
            ones = g.integers(np.ones((channels, 1, k, k)), np.float32, f"{scope}/ones", scope)
            return g.op("Conv", [x, ones], scope, kernel_shape=[k, k], strides=[s, s], group=channels)
        if node.op == "flatten":
            return g.op("Flatten", [self._float_input(node, values)], scope, axis=1)
        if node.op == "add":
            if self.largest[node.name] >= self.limit:
                raise DesignRuleError(f"layer '{node.name}': sums up to {self.largest[node.name]} are not exact")
            for name in node.inputs:
                if name not in values:
                    raise InputError(f"layer '{node.name}': adds a synapse without neuron but has no neuron")
            return g.op("Sum", [values[name] for name in node.inputs], scope)
        raise InputError(f"layer '{node.name}': op '{node.op}' has no ONNX form")

    # --- neurons --------------------------------------------------------------------------------
    def _state_inputs(self, node: Node, read: tuple[bool, ...]) -> list[str | None]:
        """The layer's registers before the first step (neuron_states): constants in the T-step
        graph (None for those the rule does not `read`), graph inputs defaulting to them stepwise."""
        states = neuron_states(node)
        if not self.stepwise:
            return [self._per_sample(node, value, np.int64, name.rsplit(".", 1)[1] + "0") if used else None
                    for (name, _, value), used in zip(states, read)]
        for name, _, value in states:
            self.g.initializers.append(numpy_helper.from_array(value, name))
            self.inputs.append(_value_info(name, np.int64, [STATE_BATCH] + list(node.shape)))
        return [name for name, _, _ in states]

    def _state_outputs(self, node: Node, values: list[str]) -> None:
        """The layer's registers after the step, named as neuron_states says (model_step.onnx)."""
        for (_, output, _), value in zip(neuron_states(node), values):
            self.g.op("Identity", [value], node.name, outputs=[output])
        self.outputs += [_value_info(output, np.int64, [BATCH] + list(node.shape))
                         for _, output, _ in neuron_states(node)]

    def _neuron(self, node: Node, current: str) -> str:
        """Run the layer's CUBA recurrence; returns its per-step outputs merged over time:
        spikes (bool; int64 counts where max_spikes > 1) for a spiking layer, v (int64) for the integrator."""
        g, n, scope, arith = self.g, node.neuron, node.name, self.arith
        keep_u = fixedpoint.current_keep(n.u_decay, self.decay_bits)
        keep_v = fixedpoint.voltage_keep(n.v_decay, self.decay_bits)
        u_state, v_state = self._state_inputs(node, (keep_u != 0, True))   # u0 is unused without memory
        shift_bits = fixedpoint.input_shift(n.input_shift, arith["activation_shift"])
        shift = g.const(2 ** shift_bits, np.int64)
        a = g.op("Mul", [current, shift], scope)
        bias = self._per_sample(node, n.bias, np.int64, "bias")
        recurrent = node.recurrent is not None
        u_steps: list[str] = []
        if keep_u == 0 and not recurrent:
            # no current memory: u[t] = limit(a[t] << shift) for every step at once; the limit is
            # the identity (and left out) when |a| << shift can never leave the register
            if self.current_bound[node.name] * 2 ** shift_bits < self.top:
                u_all = a
            else:
                u_all = self._limit(a, arith["current_overflow"], scope)
            drive = self._split_steps(g.op("Add", [u_all, bias], scope), scope)
            u_steps = self._split_steps(u_all, scope) if self.stepwise else []
            a_steps = None
        else:   # u step by step (a recurrent layer's input needs its spikes of the step before)
            drive, a_steps = [], self._split_steps(a, scope)
        fire_level = reset_amount = count = None
        if n.kind == "spiking":   # fires at v >= fixedpoint.fire_at(threshold, fire rule)
            level = fixedpoint.fire_at(n.threshold, arith["fire_rule"])
            fire_level = self._per_sample(node, level, np.int64, "fire_level")
            if n.reset == "soft":
                reset_amount = self._per_sample(node, n.reset_amount, np.int64, "reset_amount")
            if n.max_spikes > 1:   # spike_count's divisor max(fire level, 1) is the fire level (>= 1 here)
                count = (n.max_spikes, fire_level, False)
        spike_state = f"state.{node.name}.spikes"
        fired = self._state_input(spike_state) if recurrent and self.stepwise else None   # spikes[-1] = 0
        u, v, outputs = u_state, v_state, []
        for t in range(self.steps):
            if a_steps is not None:
                a_t = a_steps[t]
                if recurrent and fired is not None:
                    a_t = g.op("Add", [a_t, g.op("Mul", [self._recurrent_input(node, fired), shift], scope)], scope)
                decayed = self._decay(u, keep_u, scope)
                u = a_t if decayed is None else g.op("Add", [decayed, a_t], scope)
                u = self._limit(u, arith["current_overflow"], scope)
                u_steps.append(u)
                drive.append(g.op("Add", [u, bias], scope))
            drive_t = drive[t]
            decayed = self._decay(v, keep_v, scope)
            v = drive_t if decayed is None else g.op("Add", [decayed, drive_t], scope)
            v = self._limit(v, arith["voltage_overflow"], scope)
            if n.kind == "spiking":
                fired, v = _fire_and_reset(g, n.reset, "GreaterOrEqual", v, fire_level, reset_amount,
                                           g.const(0, np.int64), scope, count)
                outputs.append(fired)
            else:
                outputs.append(v)
        if self.stepwise and recurrent:
            self._state_output(spike_state, g.op("Cast", [fired], scope, to=TensorProto.UINT8), scope)
        if self.stepwise:
            self._state_outputs(node, [u_steps[-1], v])
        return self._merge_steps(outputs, scope)

    def _sigma_delta(self, node: Node, current: str) -> str:
        """Run the layer's sigma-delta rule (fixedpoint.sigma_delta_step) in int64, unrolled over
        the steps; returns its messages (int64) merged over time. The arithmetic shift of the
        message is (sent - sent mod 2^shift) / 2^shift: Mod with fmod = 0 takes the divisor's sign,
        so the division is exact and its rounding convention never matters."""
        g, n, scope = self.g, node.neuron, node.name
        sigma, act, residue = self._state_inputs(node, (n.accumulate, True, True))
        x = self._split_steps(g.op("Mul", [current, g.const(2 ** n.input_shift, np.int64)], scope), scope)
        bias = self._per_sample(node, n.bias, np.int64, "bias")
        threshold = self._per_sample(node, n.threshold, np.int64, "threshold")
        zero, sent_steps = g.const(0, np.int64), []
        for x_t in x:
            sigma = g.op("Add", [sigma, x_t], scope) if n.accumulate else x_t
            value = g.op("Add", [sigma, bias], scope)
            act_t = g.op("Max", [value, zero], scope) if n.activation == "relu" else value
            delta = g.op("Add", [g.op("Sub", [act_t, act], scope), residue], scope)
            reached = g.op("GreaterOrEqual", [g.op("Abs", [delta], scope), threshold], scope)
            sent = g.op("Where", [reached, delta, zero], scope)
            residue, act = g.op("Sub", [delta, sent], scope), act_t
            sent_steps.append(sent)
        if self.stepwise:
            self._state_outputs(node, [sigma, act, residue])
        sent = self._merge_steps(sent_steps, scope)
        if n.message_shift == 0:
            return sent
        unit = g.const(2 ** n.message_shift, np.int64)
        return g.op("Div", [g.op("Sub", [sent, g.op("Mod", [sent, unit], scope)], scope), unit], scope)

    # --- whole graph ----------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        net, g = self.net, self.g
        in_shape = list(net.input_node.shape)
        time = [] if self.stepwise else [net.T]
        self.inputs.append(_value_info(INPUT, np.int64, time + [BATCH] + in_shape))
        merged = INPUT if self.stepwise else g.op("Reshape", [INPUT, g.const([-1] + in_shape, np.int64)], "input")
        values = {net.input_node.name: g.op("Cast", [merged], "input", to=TensorProto.FLOAT)}
        currents: dict[str, str] = {}
        spike_outputs = []
        for node in net.nodes[1:]:
            if node.op in ("conv2d", "linear"):
                current = self._current(node, values)
            elif node.op == "add" and node.neuron is not None:
                missing = [name for name in node.inputs if name not in currents]
                if missing:
                    raise InputError(f"layer '{node.name}': an add with a neuron must sum synapses without "
                                     f"neurons ({', '.join(missing)} are not)")
                self.current_bound[node.name] = sum(self.current_bound[name] for name in node.inputs)
                current = currents[node.inputs[0]]
                for name in node.inputs[1:]:  # ONNX Sum is float-only: int64 adds one by one
                    current = g.op("Add", [current, currents[name]], node.name)
            else:
                if node.neuron is not None:
                    raise InputError(f"layer '{node.name}': a neuron after '{node.op}' is not supported")
                values[node.name] = self._plain(node, values)
                continue
            if node.neuron is None:
                currents[node.name] = current
                continue
            out = (self._sigma_delta if node.neuron.kind == "sigma_delta" else self._neuron)(node, current)
            if node.spiking:
                values[node.name] = g.op("Cast", [out], node.name, to=TensorProto.FLOAT)
                if self.spikes:
                    spike_outputs.append(self._spike_output(node, out))
            else:
                self._readout(node, out)
        self.outputs += spike_outputs
        kind = "step" if self.stepwise else "sequence"
        doc = (f"snnc {__version__}: spike-exact fixed-point network '{net.name}' "
               f"({'one time step' if self.stepwise else f'{net.T} time steps'}); see docs/onnx.md")
        metadata = {"snnc.network": net.name, "snnc.T": net.T, "snnc.readout": net.readout,
                    "snnc.kind": kind, "snnc.arithmetic": "fixed", "snnc.target": net.metadata.get("target", ""),
                    "snnc.fire_rule": self.arith["fire_rule"]}
        return _model(g, f"snnc_{kind}", doc, self.inputs, self.outputs, metadata)

    def _spike_output(self, node: Node, fired: str) -> onnx.ValueInfoProto:
        """A layer's events as execute.Trace holds them: uint8 spikes (counts), int32 messages."""
        g, shape = self.g, list(node.shape)
        dtype = np.dtype(np.int32 if node.neuron.kind == "sigma_delta" else np.uint8)
        if self.stepwise:
            g.op("Cast", [fired], node.name, outputs=[node.name], to=_ONNX_TYPE[dtype])
            return _value_info(node.name, dtype, [BATCH] + shape)
        spikes = g.op("Cast", [fired], node.name, to=_ONNX_TYPE[dtype])
        g.op("Reshape", [spikes, g.const([self.net.T, -1] + shape, np.int64)], node.name, outputs=[node.name])
        return _value_info(node.name, dtype, [self.net.T, BATCH] + shape)

    def _readout(self, node: Node, v: str) -> None:
        g, classes = self.g, list(node.shape)
        if self.stepwise:
            g.op("Identity", [v], node.name, outputs=[READOUT_STEP])
            self.outputs.insert(0, _value_info(READOUT_STEP, np.int64, [BATCH] + classes))
            return
        steps = g.op("Reshape", [v, g.const([self.net.T, -1] + classes, np.int64)], node.name,
                     outputs=[READOUT_STEPS])
        if self.net.readout == "last":   # fixedpoint.readout: the last step, or the sum over steps
            g.op("Gather", [steps, g.const(self.net.T - 1, np.int64)], node.name, outputs=[READOUT], axis=0)
        else:
            g.op("ReduceSum", [steps, g.const([0], np.int64)], node.name, outputs=[READOUT], keepdims=0)
        self.outputs[:0] = [_value_info(READOUT, np.int64, [BATCH] + classes),
                            _value_info(READOUT_STEPS, np.int64, [self.net.T, BATCH] + classes)]


def fixed_model(net: Network, stepwise: bool = False, spikes: bool = True,
                limit: int = FLOAT32_EXACT) -> onnx.ModelProto:
    """The spike-exact ONNX model of a fixed-point network: all T steps, or one step with state I/O.

    `spikes` adds every spiking layer's spikes as outputs (always on for the step model);
    `limit` is the float32 exactness bound (lower it only to test the weight-plane split)."""
    if not net.fixed:
        raise InputError(f"network '{net.name}' is not fixed-point: quantize it before the ONNX export")
    net.validate()
    return _FixedGraph(net, stepwise, spikes or stepwise, limit).build()


# --- float32 model of the folded network --------------------------------------------------------

def float_model(net: Network, spikes: bool = False) -> onnx.ModelProto:
    """The folded float network as a plain float32 ONNX model over T steps (not bit-exact).

    Same input as model.onnx (integer pixels [T, batch, C, H, W], int64), scaled by the encoding
    inside; outputs readout (mean or last of the integrator) and readout_steps, float32."""
    if net.fixed:
        raise InputError(f"network '{net.name}' is fixed-point; the float model needs the folded float network")
    net.validate()
    reserved = {INPUT, READOUT, READOUT_STEPS}
    _check_names(net, reserved)
    g = _Builder(reserved | {node.name for node in net.spiking_nodes()})
    T, in_shape = net.T, list(net.input_node.shape)
    inputs = [_value_info(INPUT, np.int64, [T, BATCH] + in_shape)]
    outputs, spike_outputs = [], []
    merged = g.op("Reshape", [INPUT, g.const([-1] + in_shape, np.int64)], "input")
    pixels = g.op("Cast", [merged], "input", to=TensorProto.FLOAT)
    values = {net.input_node.name: g.op("Mul", [pixels, g.const(net.encoding["scale"], np.float32)], "input")}

    def per_sample(node, array, hint):
        return g.array(np.asarray(array, np.float32).reshape((1,) + tuple(node.shape)), f"{node.name}/{hint}")

    for node in net.nodes[1:]:
        scope, ins = node.name, [values[name] for name in node.inputs]
        if node.delayed:
            ins = [_delayed_over_time(g, ins[0], node, T)]
        if node.op == "conv2d":
            args = [ins[0], g.array(node.weight.astype(np.float32), f"{scope}/weight")]
            if node.bias is not None:
                args.append(g.array(node.bias.astype(np.float32), f"{scope}/bias"))
            z = g.op("Conv", args, scope, **_conv_attributes(node))
        elif node.op == "linear":
            args = [ins[0], g.array(node.weight.astype(np.float32), f"{scope}/weight")]
            if node.bias is not None:
                args.append(g.array(node.bias.astype(np.float32), f"{scope}/bias"))
            z = g.op("Gemm", args, scope, transB=1)
        elif node.op in ("avgpool", "sumpool"):
            k, s = node.attrs["kernel"], node.attrs["stride"]
            z = g.op("AveragePool", ins, scope, kernel_shape=[k, k], strides=[s, s])
            if node.op == "sumpool":
                z = g.op("Mul", [z, g.const(k * k, np.float32)], scope)
        elif node.op == "flatten":
            z = g.op("Flatten", ins, scope, axis=1)
        elif node.op == "add":
            z = g.op("Sum", ins, scope)
        else:
            raise InputError(f"layer '{node.name}': op '{node.op}' has no ONNX form")
        if node.bn is not None:
            channel_shape = (-1,) + (1,) * (len(node.shape) - 1)
            z = g.op("Mul", [z, g.array(np.asarray(node.bn.scale, np.float32).reshape(channel_shape),
                                         f"{scope}/bn_scale")], scope)
            z = g.op("Add", [z, g.array(np.asarray(node.bn.shift, np.float32).reshape(channel_shape),
                                         f"{scope}/bn_shift")], scope)
        if node.neuron is None:
            values[node.name] = z
            continue
        n = node.neuron
        bias = per_sample(node, n.bias, "bias")
        threshold = None
        if n.kind == "spiking":
            theta = n.threshold
            if n.mpr:
                from snnc.passes.fold import mpr_inverse
                theta = mpr_inverse(theta)
            threshold = per_sample(node, theta, "threshold")
        reset_amount = per_sample(node, n.reset_amount, "reset_amount") if n.reset == "soft" else None
        count = (n.max_spikes, threshold, True) if n.max_spikes > 1 else None   # floor(H / threshold), capped
        steps = g.op("Split", [z], scope, outputs=T, axis=0) if T > 1 else [z]
        v = per_sample(node, n.initial_state, "v0")
        current, results = None, []
        for z_t in steps:
            if node.recurrent is not None and results:   # the spikes of the step before
                z_t = g.op("Add", [z_t, _recurrent_float(g, node, results[-1])], scope)
            if current is None or float(n.u_decay) == 1.0:
                current = z_t
            else:
                current = g.op("Add", [g.op("Mul", [current, g.const(1.0 - float(n.u_decay), np.float32)], scope),
                                       z_t], scope)
            drive = current if float(n.input_gain) == 1.0 else \
                g.op("Mul", [current, g.const(n.input_gain, np.float32)], scope)
            if float(n.v_decay) != 0.0:
                v = g.op("Mul", [v, g.const(1.0 - float(n.v_decay), np.float32)], scope)
            v = g.op("Add", [g.op("Add", [v, drive], scope), bias], scope)
            if n.kind == "spiking":
                fired, v = _fire_and_reset(g, n.reset, "GreaterOrEqual", v, threshold, reset_amount,
                                           g.const(0.0, np.float32), scope, count)
                results.append(fired)
            else:
                results.append(v)
        out = results[0] if T == 1 else g.op("Concat", results, scope, axis=0)
        if node.spiking:
            values[node.name] = g.op("Cast", [out], scope, to=TensorProto.FLOAT)
            if spikes:
                cast = g.op("Cast", [out], scope, to=TensorProto.UINT8)
                g.op("Reshape", [cast, g.const([T, -1] + list(node.shape), np.int64)], scope, outputs=[node.name])
                spike_outputs.append(_value_info(node.name, np.uint8, [T, BATCH] + list(node.shape)))
        else:
            classes = list(node.shape)
            g.op("Reshape", [out, g.const([T, -1] + classes, np.int64)], scope, outputs=[READOUT_STEPS])
            if net.readout == "last":
                g.op("Gather", [READOUT_STEPS, g.const(T - 1, np.int64)], scope, outputs=[READOUT], axis=0)
            else:
                g.op("ReduceMean", [READOUT_STEPS], scope, outputs=[READOUT], axes=[0], keepdims=0)
            outputs = [_value_info(READOUT, np.float32, [BATCH] + classes),
                       _value_info(READOUT_STEPS, np.float32, [T, BATCH] + classes)]
            values[node.name] = out
    doc = (f"snnc {__version__}: float32 model of the folded network '{net.name}' ({T} time steps); "
           "approximate, see docs/onnx.md")
    metadata = {"snnc.network": net.name, "snnc.T": T, "snnc.readout": net.readout, "snnc.kind": "sequence",
                "snnc.arithmetic": "float32", "snnc.encoding_scale": repr(float(net.encoding["scale"]))}
    return _model(g, "snnc_float", doc, inputs, outputs + spike_outputs, metadata)


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic bytes of a model."""
    return model.SerializeToString(deterministic=True)


def check(model: onnx.ModelProto) -> None:
    """onnx.checker with full shape/type inference."""
    onnx.checker.check_model(model, full_check=True)
