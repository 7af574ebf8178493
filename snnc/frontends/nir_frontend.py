"""Frontend: a NIR graph (snnTorch, Norse, SpikingJelly, Sinabs, lava-dl, or snnc's own export)
becomes a float snnc Network.

NIR describes neurons as continuous-time ODEs; snnc runs discrete steps. Each neuron is discretized
with Forward Euler at the step `dt` (docs/interop.md has every formula):

    LIF      tau dv/dt = (v_leak - v) + r I     ->  v_decay = dt/tau, input gain = r dt/tau,
                                                     bias = (dt/tau) (v_leak - v_reset)
    IF       dv/dt = r I                         ->  v_decay = 0, input gain = r dt
    CubaLIF  tau_syn dI/dt = -I + w_in S         ->  u_decay = dt/tau_syn, the synaptic input
                                                     scaled by w_in dt/tau_syn, then as LIF
    LI, I, CubaLI                                ->  the same, as the (non-spiking) readout
    Threshold                                    ->  a neuron with no memory (v_decay = 1)

NIR fires on v > v_threshold, snnc on H >= threshold: the threshold becomes the next float64 above
v_threshold, which is the same decision for every float64 membrane value. A non-zero v_reset is
expressed by measuring the membrane from v_reset (threshold - v_reset, initial state -v_reset).
The membrane starts at 0 (NIR does not say; snnTorch, Sinabs and SpikingJelly start there).

Nodes that sum several incoming edges follow NIR's convention: the inputs are added.
snnc's own export (snnc.exporters.nir_export) keeps what NIR cannot say in node metadata under
"snnc" (soft reset, initial state, exact decays); with `use_metadata` those values are used.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from snnc.errors import InputError
from snnc.ir import (Network, Neuron, Node, check_shape, check_steps, check_weight_count, conv_output_shape,
                     encoding_problem, pool_output_shape)

# What one input unit is worth when nothing else is said: 8-bit pixels, real value pixel/255,
# presented as the input current at every step (snnc's own direct encoding).
DEFAULT_ENCODING = {"kind": "direct", "scale": 1.0 / 255.0, "max": 255, "bits": 8,
                    "description": "pixel values 0-255 presented at every step; real input = pixel/255"}

NEURON_TYPES = ("LIF", "IF", "CubaLIF", "LI", "I", "CubaLI", "Threshold")
INTEGRATOR_TYPES = ("LI", "I", "CubaLI")
SYNAPSE_TYPES = ("Affine", "Linear", "Conv2d")
METADATA_KEY = "snnc"              # per-node metadata written by snnc's exporter
GRAPH_METADATA_KEY = "snnc_network"  # graph metadata: JSON with name, T, readout, encoding, order
DT_INFER_TOLERANCE = 1e-6
TEXT_FIELDS = ("type", "padding", "metadata", "edges", "version")  # the rest of a node holds numbers


def _type(node) -> str:
    return type(node).__name__


def _read_graph(source):
    import nir

    if isinstance(source, nir.NIRGraph):
        return source, "nir"
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: no such NIR file")
    _check_node_fields(path)
    try:
        return nir.read(str(path)), path.stem
    # the nir library reports a malformed file with whatever its node constructors raise
    except (OSError, KeyError, ValueError, TypeError, AssertionError, AttributeError, IndexError,
            OverflowError, ZeroDivisionError) as error:
        detail = " ".join(str(error).split())[:200]
        raise InputError(f"{path}: not a readable NIR graph ({type(error).__name__}: {detail})") from None


def _check_node_fields(path: Path) -> None:
    """Refuse, before the nir library builds nodes from them (it divides by strides), text where a
    node needs numbers and strides or kernel sizes below 1."""
    import h5py

    def check_group(group, prefix: str) -> None:
        for key, item in group.items():
            if isinstance(item, h5py.Group):
                if key != "metadata":
                    check_group(item, f"{prefix}{key}/" if key != "nodes" else prefix)
                continue
            node = prefix.rstrip("/") or key
            if key in TEXT_FIELDS or node == key:
                continue
            if item.dtype.kind not in "biuf":
                what = "text" if item.dtype.kind in "OSU" else f"{item.dtype} values"
                raise InputError(f"{path}: NIR node '{node}': field '{key}' holds {what}, not numbers")
            if key in ("stride", "kernel_size") and item.size and np.min(item[()]) < 1:
                raise InputError(f"{path}: NIR node '{node}': {key} {np.asarray(item[()]).tolist()} must be "
                                 f"at least 1")

    try:
        with h5py.File(path, "r") as handle:
            if isinstance(handle.get("node"), h5py.Group) and isinstance(handle["node"].get("nodes"), h5py.Group):
                check_group(handle["node"]["nodes"], "")
    except OSError as error:
        raise InputError(f"{path}: not a readable NIR graph ({error})") from None


def _array(value, where: str = "NIR graph") -> np.ndarray:
    try:
        return np.array(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(f"{where}: {str(value)[:40]!r} is not an array of numbers") from None


def _pair(value, what: str, key: str) -> tuple[int, int]:
    array = np.atleast_1d(_array(value, f"NIR node '{key}': {what}")).astype(np.int64).ravel()
    if array.size == 1:
        return int(array[0]), int(array[0])
    if array.size == 2:
        return int(array[0]), int(array[1])
    raise InputError(f"NIR node '{key}': {what} {value!r} is not one or two integers")


def _uniform(values: np.ndarray, key: str, what: str) -> float:
    values = np.asarray(values, dtype=np.float64)
    first = float(values.ravel()[0]) if values.size else 0.0
    if not np.all(values == first):
        raise InputError(f"NIR node '{key}': per-neuron {what} is not supported by snnc "
                         f"(one value per layer); found {np.unique(values).size} different values")
    return first


def _broadcast(values, shape: tuple[int, ...], key: str, what: str) -> np.ndarray:
    values = _array(values, f"NIR node '{key}': {what}")
    try:
        return np.broadcast_to(values, shape).copy()
    except ValueError:
        pass
    if values.size == int(np.prod(shape)):
        return values.reshape(shape).copy()
    raise InputError(f"NIR node '{key}': {what} of shape {list(values.shape)} does not fit the "
                     f"layer shape {list(shape)}")


# --- dt -----------------------------------------------------------------------------------------

def _time_constant_pairs(graph) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(key, tau, r) of every leaky node: the membrane time constant and its resistance."""
    pairs = []
    for key, node in graph.nodes.items():
        kind = _type(node)
        if kind in ("LIF", "LI"):
            pairs.append((key, _array(node.tau), _array(node.r)))
        elif kind in ("CubaLIF", "CubaLI"):
            pairs.append((key, _array(node.tau_mem), _array(node.r)))
    return pairs


def resolve_dt(graph, dt: Optional[float]) -> tuple[float, str]:
    """The discretization step, and where it came from (documented in docs/interop.md)."""
    if dt is not None:
        if not dt > 0:
            raise InputError(f"dt must be positive, got {dt}")
        return float(dt), "given"
    graph_dt = graph.metadata.get("dt") if isinstance(graph.metadata, dict) else None
    if graph_dt is not None:
        value = np.asarray(graph_dt)
        if value.size != 1 or value.dtype.kind not in "iuf" or not np.isfinite(value).all() or not value > 0:
            raise InputError(f"NIR graph metadata 'dt' must be one positive number, got {str(graph_dt)[:40]!r}")
        return float(value.ravel()[0]), "graph metadata 'dt'"
    pairs = _time_constant_pairs(graph)
    if not pairs:
        return 1.0, "no leaky neurons: one step is one time unit"
    # snnTorch (and any exporter with unit input gain) writes r = tau/dt, so tau/r is dt.
    candidates = np.concatenate([(tau / r).ravel() for _, tau, r in pairs])
    reference = float(candidates[0])
    if not np.all(np.isfinite(candidates)) or reference <= 0 \
            or np.any(np.abs(candidates - reference) > DT_INFER_TOLERANCE * reference):
        raise InputError("cannot infer the time step dt from the NIR graph (tau/r differs between "
                         "neurons): pass dt explicitly (snnTorch exports use 1e-4, Norse 1e-3)")
    for key, _, r in pairs:
        if np.any(r <= 1.0):
            raise InputError(f"cannot infer dt: NIR node '{key}' has r <= 1, so tau/r would leave "
                             f"its membrane no memory; pass dt explicitly")
    return reference, "inferred as tau/r (unit input gain, snnTorch's convention r = tau/dt)"


# --- neurons ------------------------------------------------------------------------------------

def _neuron_from_nir(key: str, node, shape: tuple[int, ...], dt: float) -> tuple[Neuron, np.ndarray]:
    """The snnc neuron for a NIR neuron node, and the per-neuron gain on its synaptic input
    (folded into the synapse by the caller when it is not one number)."""
    kind = _type(node)
    zeros = np.zeros(shape)
    spiking = kind not in INTEGRATOR_TYPES
    u_decay = 1.0
    input_scale = np.ones(shape)
    v_reset = zeros.copy()
    if kind in ("LIF", "LI"):
        tau = _broadcast(node.tau, shape, key, "tau")
        decay = dt / tau
        gain = _broadcast(node.r, shape, key, "r") * decay
        leak = _broadcast(node.v_leak, shape, key, "v_leak")
    elif kind in ("CubaLIF", "CubaLI"):
        tau = _broadcast(node.tau_mem, shape, key, "tau_mem")
        decay = dt / tau
        gain = _broadcast(node.r, shape, key, "r") * decay
        leak = _broadcast(node.v_leak, shape, key, "v_leak")
        syn_decay = dt / _broadcast(node.tau_syn, shape, key, "tau_syn")
        u_decay = _uniform(syn_decay, key, "synaptic time constant")
        input_scale = _broadcast(node.w_in, shape, key, "w_in") * syn_decay
    elif kind in ("IF", "I"):
        decay = zeros.copy()
        gain = _broadcast(node.r, shape, key, "r") * dt
        leak = zeros.copy()
    elif kind == "Threshold":
        decay = np.ones(shape)
        gain = np.ones(shape)
        leak = zeros.copy()
    else:  # pragma: no cover - callers pass neuron types only
        raise InputError(f"NIR node '{key}': {kind} is not a neuron")
    if not (np.all(np.isfinite(decay)) and np.all(decay >= 0) and np.all(decay <= 1)):
        raise InputError(f"NIR node '{key}' ({kind}): dt/tau = {np.unique(decay)[:3]} is outside [0, 1] "
                         f"at dt = {dt}: the time constant is shorter than one step")
    if not 0.0 <= u_decay <= 1.0:
        raise InputError(f"NIR node '{key}' ({kind}): dt/tau_syn = {u_decay} is outside [0, 1] at dt = {dt}")
    v_decay = _uniform(decay, key, "membrane time constant")
    if spiking:
        threshold = (_broadcast(node.threshold, shape, key, "threshold") if kind == "Threshold"
                     else _broadcast(node.v_threshold, shape, key, "v_threshold"))
        if kind != "Threshold":
            v_reset = _broadcast(node.v_reset, shape, key, "v_reset")
        neuron = Neuron(
            kind="spiking",
            # NIR: spike when v > v_threshold; snnc: H >= threshold. For float64 H these agree
            # exactly when threshold is the next float64 above v_threshold.
            threshold=np.nextafter(threshold - v_reset, np.inf),
            reset="hard", reset_amount=None,
            bias=v_decay * (leak - v_reset),
            initial_state=0.0 - v_reset,
            v_decay=v_decay, u_decay=u_decay)
    else:
        neuron = Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                        bias=v_decay * leak, initial_state=zeros.copy(), v_decay=v_decay, u_decay=u_decay)
    return neuron, gain * input_scale


def _apply_snnc_metadata(key: str, node, neuron: Neuron, shape) -> Neuron:
    """Replace what NIR cannot carry exactly with the values snnc's exporter stored."""
    meta = node.metadata.get(METADATA_KEY) if isinstance(node.metadata, dict) else None
    if not isinstance(meta, dict):
        return neuron
    try:
        neuron.kind = str(meta["kind"])
        neuron.reset = str(meta["reset"])
        neuron.v_decay = float(meta["v_decay"])
        neuron.u_decay = float(meta["u_decay"])
        neuron.input_gain = float(meta["input_gain"])
        neuron.mpr = bool(meta.get("mpr", False))
    except KeyError as error:
        raise InputError(f"NIR node '{key}': snnc metadata lacks {error}")
    except (ValueError, TypeError) as error:
        raise InputError(f"NIR node '{key}': snnc metadata holds a value that is not a number ({error})") from None
    for field in ("bias", "initial_state", "reset_amount"):
        if field in meta:
            setattr(neuron, field, _broadcast(meta[field], shape, key, field))
        elif field != "reset_amount":
            setattr(neuron, field, np.zeros(shape))
    if "threshold" in meta:
        neuron.threshold = _broadcast(meta["threshold"], shape, key, "threshold")
    if neuron.kind == "integrator":
        neuron.threshold, neuron.reset_amount = None, None
    elif neuron.reset != "soft":
        neuron.reset_amount = None
    return neuron


# --- graph walk ---------------------------------------------------------------------------------

class _Builder:
    """Turns NIR nodes (in topological order) into snnc nodes."""

    def __init__(self, graph, dt: float, use_metadata: bool):
        self.graph, self.dt, self.use_metadata = graph, dt, use_metadata
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.ref: dict[str, str] = {}        # NIR key -> snnc node computing its output
        self.current: set[str] = set()       # snnc nodes whose output is a synaptic current
        self.preds: dict[str, list[str]] = {k: [] for k in graph.nodes}
        self.succs: dict[str, list[str]] = {k: [] for k in graph.nodes}
        for src, dst in graph.edges:
            if src not in graph.nodes or dst not in graph.nodes:
                raise InputError(f"NIR edge ({src!r}, {dst!r}) names a node that does not exist")
            self.preds[dst].append(src)
            self.succs[src].append(dst)
        self.input_scale = 1.0
        self.notes: list[str] = []

    def add(self, node: Node) -> Node:
        if node.name in self.by_name:
            raise InputError(f"NIR graph: two nodes would both be called '{node.name}'")
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node

    def unique(self, base: str) -> str:
        name, index = base, 1
        while name in self.by_name or name in self.graph.nodes:
            index += 1
            name = f"{base}{index}"
        return name

    def source(self, key: str) -> Node:
        return self.by_name[self.ref[key]]

    def single_input(self, key: str) -> str:
        preds = self.preds[key]
        if len(preds) != 1:
            raise InputError(f"NIR node '{key}' ({_type(self.graph.nodes[key])}) needs exactly one "
                             f"input, it has {len(preds)}")
        return preds[0]

    def value_input(self, key: str) -> Node:
        """The node a synapse or pool reads: several inputs are summed by an add node."""
        preds = self.preds[key]
        if not preds:
            raise InputError(f"NIR node '{key}' has no input")
        for pred in preds:
            if self.ref[pred] in self.current:
                raise InputError(
                    f"NIR node '{key}' ({_type(self.graph.nodes[key])}) reads the synaptic current of "
                    f"'{pred}' directly: snnc needs a neuron after every Affine/Linear/Conv2d "
                    f"(pooling or a second synapse between a synapse and its neurons is not supported)")
        if len(preds) == 1:
            return self.source(preds[0])
        sources = [self.source(p) for p in preds]
        self._same_shape(key, sources)
        return self.add(Node(name=self.unique(f"{key}_sum"), op="add", inputs=[s.name for s in sources],
                             shape=sources[0].shape))

    @staticmethod
    def _same_shape(key, sources):
        if len({tuple(s.shape) for s in sources}) != 1:
            raise InputError(f"NIR node '{key}': its inputs have different shapes "
                             f"{[list(s.shape) for s in sources]}")

    # --- node kinds ---

    def input(self, key, node):
        where = f"NIR node '{key}' (Input)"
        shape = check_shape([int(x) for x in _array(node.input_type["input"], where).ravel()], where)
        self.add(Node(name=key, op="input", inputs=[], shape=shape))
        self.ref[key] = key

    def synapse(self, key, node):
        kind = _type(node)
        source = self.value_input(key)
        weight = _array(node.weight, f"NIR node '{key}': weight")
        meta = node.metadata if isinstance(node.metadata, dict) else {}
        if kind in ("Affine", "Linear"):
            if weight.ndim != 2:
                raise InputError(f"NIR node '{key}' ({kind}): weight must be 2-D, got {list(weight.shape)}")
            if len(source.shape) != 1 or source.shape[0] != weight.shape[1]:
                raise InputError(f"NIR node '{key}' ({kind}): weight {list(weight.shape)} does not fit its "
                                 f"input of shape {list(source.shape)} (is a Flatten missing?)")
            bias = _array(node.bias) if kind == "Affine" else None
            if bias is not None and bias.shape != (weight.shape[0],):
                bias = _broadcast(bias, (weight.shape[0],), key, "bias")
            bias = self._own_bias(meta, bias)
            out = Node(name=key, op="linear", inputs=[source.name], shape=(weight.shape[0],),
                       weight=weight, bias=bias)
        else:
            if int(np.asarray(node.groups)) != 1:
                raise InputError(f"NIR node '{key}' (Conv2d): groups={int(np.asarray(node.groups))} is not "
                                 f"supported (snnc convolutions are dense)")
            if weight.ndim != 4 or len(source.shape) != 3 or source.shape[0] != weight.shape[1]:
                raise InputError(f"NIR node '{key}' (Conv2d): weight {list(weight.shape)} does not fit its "
                                 f"input of shape {list(source.shape)}")
            if _pair(node.dilation, "dilation", key) != (1, 1):
                raise InputError(f"NIR node '{key}' (Conv2d): dilation {node.dilation!r} is not supported")
            kernel = (int(weight.shape[2]), int(weight.shape[3]))
            stride = _pair(node.stride, "stride", key)
            padding = node.padding
            if isinstance(padding, (str, bytes)):
                padding = padding.decode() if isinstance(padding, bytes) else padding
                if padding == "valid":
                    padding = (0, 0)
                elif padding == "same" and stride == (1, 1) and all(k % 2 == 1 for k in kernel):
                    padding = (kernel[0] // 2, kernel[1] // 2)
                else:
                    raise InputError(f"NIR node '{key}' (Conv2d): padding '{padding}' is not supported here")
            padding = _pair(padding, "padding", key)
            shape = conv_output_shape(source.shape, weight.shape[0], kernel, stride, padding,
                                      f"NIR node '{key}' (Conv2d)")
            bias = self._own_bias(meta, _array(node.bias, f"NIR node '{key}': bias").reshape(-1))
            out = Node(name=key, op="conv2d", inputs=[source.name], shape=shape,
                       attrs={"kernel": list(kernel), "stride": list(stride), "padding": list(padding)},
                       weight=weight, bias=bias)
        self.add(out)
        self.ref[key] = out.name
        self.current.add(out.name)

    def _own_bias(self, meta: dict, bias):
        """snnc's exporter may carry a leak-free neuron's bias in the NIR synapse bias; its metadata
        then holds the synapse's own bias (the neuron's exact bias is in the neuron's metadata)."""
        if not self.use_metadata:
            return bias
        if meta.get("snnc_no_bias"):
            return None
        if "snnc_bias" in meta:
            return _array(meta["snnc_bias"])
        return bias

    def pool(self, key, node):
        kind = _type(node)
        source = self.value_input(key)
        kernel = _pair(node.kernel_size, "kernel_size", key)
        stride = _pair(node.stride, "stride", key)
        padding = _pair(node.padding, "padding", key)
        if kernel[0] != kernel[1] or stride[0] != stride[1] or padding != (0, 0):
            raise InputError(f"NIR node '{key}' ({kind}): only square kernels and strides without padding "
                             f"are supported (kernel {kernel}, stride {stride}, padding {padding})")
        k, s = kernel[0], stride[0]
        shape = pool_output_shape(source.shape, k, s, f"NIR node '{key}' ({kind})")
        out = self.add(Node(name=key, op="avgpool" if kind == "AvgPool2d" else "sumpool", inputs=[source.name],
                            shape=shape, attrs={"kernel": k, "stride": s}))
        self.ref[key] = out.name

    def flatten(self, key, node):
        source = self.value_input(key)
        dims = len(source.shape)
        start, end = int(np.asarray(node.start_dim)), int(np.asarray(node.end_dim))
        start_p, end_p = start % dims if dims else 0, end % dims if dims else 0
        full = start_p == 0 and end_p == dims - 1
        if not full and not (start == 1 and end == -1):   # start_dim=1 counting the batch dimension
            raise InputError(f"NIR node '{key}' (Flatten): flattening dims {start}..{end} of "
                             f"{list(source.shape)} is not supported (snnc flattens a whole sample)")
        if dims == 1 and not (isinstance(node.metadata, dict) and node.metadata.get("snnc_op") == "flatten"):
            self.ref[key] = source.name
            return
        out = self.add(Node(name=key, op="flatten", inputs=[source.name], shape=(int(np.prod(source.shape)),)))
        self.ref[key] = out.name

    def scale(self, key, node):
        values = _array(node.scale, f"NIR node '{key}': scale")
        preds = self.preds[key]
        meta = node.metadata if isinstance(node.metadata, dict) else {}
        if meta.get("snnc_op") == "add" or (len(preds) > 1 and np.all(values == 1.0)):
            if not np.all(values == 1.0):
                raise InputError(f"NIR node '{key}' (Scale): a weighted sum of several inputs is not supported")
            sources = [self.source(p) for p in preds]
            self._same_shape(key, sources)
            kinds = {s.name in self.current for s in sources}
            if len(kinds) != 1:
                raise InputError(f"NIR node '{key}' (Scale): sums synaptic currents and spikes together")
            out = self.add(Node(name=key, op="add", inputs=[s.name for s in sources], shape=sources[0].shape))
            self.ref[key] = out.name
            if kinds.pop():
                self.current.add(out.name)
            return
        pred = self.single_input(key)
        source = self.source(pred)
        if np.all(values == 1.0):
            self.ref[key] = source.name
            return
        if source.name in self.current and source.op in ("linear", "conv2d") and len(self.succs[pred]) == 1:
            per_channel = _broadcast(values, source.shape, key, "scale").reshape(source.shape[0], -1)
            if not np.all(per_channel == per_channel[:, :1]):
                raise InputError(f"NIR node '{key}' (Scale): the scale varies inside a channel of '{pred}'")
            factor = per_channel[:, 0]
            source.weight = source.weight * factor.reshape((-1,) + (1,) * (source.weight.ndim - 1))
            if source.bias is not None:
                source.bias = source.bias * factor
            self.ref[key] = source.name
            self.notes.append(f"Scale '{key}' folded into the weights of '{pred}'")
            return
        if source.op == "input" and np.all(values == values.ravel()[0]):
            self.input_scale *= float(values.ravel()[0])
            self.ref[key] = source.name
            self.notes.append(f"Scale '{key}' on the input folded into the encoding scale")
            return
        raise InputError(f"NIR node '{key}' (Scale): scaling the output of '{pred}' "
                         f"({_type(self.graph.nodes[pred])}) cannot be expressed in snnc")

    def _identity_synapse(self, name: str, source: Node) -> Node:
        channels = source.shape[0]
        check_weight_count(channels * channels, f"NIR graph: identity synapse '{name}'")
        if len(source.shape) == 3:
            return self.add(Node(name=name, op="conv2d", inputs=[source.name], shape=source.shape,
                                 weight=np.eye(channels).reshape(channels, channels, 1, 1),
                                 attrs={"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0]}))
        if len(source.shape) != 1:
            raise InputError(f"cannot connect neurons to '{source.name}' of shape {list(source.shape)}")
        return self.add(Node(name=name, op="linear", inputs=[source.name], shape=source.shape,
                             weight=np.eye(channels)))

    def neuron(self, key, node):
        kind = _type(node)
        preds = self.preds[key]
        meta = node.metadata if isinstance(node.metadata, dict) else {}
        if not preds:
            raise InputError(f"NIR node '{key}' ({kind}) has no input")
        sources = [self.source(p) for p in preds]
        single_use = all(len(self.succs[p]) == 1 for p in preds)
        as_add = meta.get("snnc_op") == "add" or len(preds) > 1
        if not as_add and sources[0].name in self.current and sources[0].neuron is None and single_use:
            target = sources[0]
        elif not as_add and sources[0].name not in self.current:
            # neurons directly on spikes or the input: an identity synapse in between
            target = self._identity_synapse(key, sources[0])
            self.notes.append(f"identity synapse inserted before the neurons of '{key}'")
        else:
            inputs = []
            for index, (pred, source) in enumerate(zip(preds, sources), start=1):
                if source.name in self.current:
                    if source.op not in ("linear", "conv2d") or len(self.succs[pred]) != 1:
                        raise InputError(f"NIR node '{key}' ({kind}): input '{pred}' must be a synapse "
                                         f"feeding only these neurons")
                    inputs.append(source)
                else:
                    inputs.append(self._identity_synapse(self.unique(f"{key}_identity{index}"), source))
            self._same_shape(key, inputs)
            target = self.add(Node(name=key, op="add", inputs=[s.name for s in inputs], shape=inputs[0].shape))
        neuron, gain = _neuron_from_nir(key, node, tuple(target.shape), self.dt)
        if self.use_metadata and isinstance(meta.get(METADATA_KEY), dict):
            neuron = _apply_snnc_metadata(key, node, neuron, tuple(target.shape))
            gain = np.ones(1)   # the exact input gain is in the metadata
        gains = np.unique(gain)
        if gains.size == 1:
            neuron.input_gain = neuron.input_gain * float(gains[0])
        else:
            self._fold_gain(key, target, gain)
        target.neuron = neuron
        self.ref[key] = target.name
        self.current.discard(target.name)

    def _fold_gain(self, key: str, target: Node, gain: np.ndarray) -> None:
        """A per-neuron input gain moves into the synapse weights (one value per output channel)."""
        per_channel = gain.reshape(target.shape[0], -1)
        if not np.all(per_channel == per_channel[:, :1]):
            raise InputError(f"NIR node '{key}': the input gain (r dt/tau) varies inside a channel")
        factor = per_channel[:, 0]
        synapses = [target] if target.op != "add" else [self.by_name[n] for n in target.inputs]
        for syn in synapses:
            syn.weight = syn.weight * factor.reshape((-1,) + (1,) * (syn.weight.ndim - 1))
            if syn.bias is not None:
                syn.bias = syn.bias * factor
        self.notes.append(f"per-neuron input gain of '{key}' folded into its synapse weights")


def _topological_order(graph, preds, succs, preferred: Optional[list[str]]) -> list[str]:
    keys = list(graph.nodes)
    rank = {key: index for index, key in enumerate(preferred or [])}
    position = {key: (rank.get(key, len(rank)), index) for index, key in enumerate(keys)}
    waiting = {key: len(set(preds[key])) for key in keys}
    ready = sorted([k for k in keys if waiting[k] == 0], key=position.get)
    order = []
    while ready:
        key = ready.pop(0)
        order.append(key)
        for succ in dict.fromkeys(succs[key]):
            waiting[succ] -= 1
            if waiting[succ] == 0:
                ready.append(succ)
                ready.sort(key=position.get)
    if len(order) != len(keys):
        stuck = sorted(set(keys) - set(order))
        raise InputError(f"NIR graph has a recurrent connection through {stuck[:4]}: snnc supports "
                         f"feed-forward networks only")
    return order


def _graph_meta(graph, use_metadata: bool) -> Optional[dict]:
    if not use_metadata or not isinstance(graph.metadata, dict) or GRAPH_METADATA_KEY not in graph.metadata:
        return None
    raw = graph.metadata[GRAPH_METADATA_KEY]
    try:
        meta = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError as error:
        raise InputError(f"NIR graph: malformed '{GRAPH_METADATA_KEY}' metadata ({error})")
    fields = {"name": str, "readout": str, "encoding": dict, "metadata": dict, "order": list}
    if not isinstance(meta, dict) or "T" not in meta or "encoding" not in meta or any(
            key in meta and not isinstance(meta[key], kind) for key, kind in fields.items()) \
            or not all(isinstance(key, str) for key in meta.get("order", [])):
        raise InputError(f"NIR graph: '{GRAPH_METADATA_KEY}' metadata must be an object with T, encoding "
                         f"and optionally name, readout, metadata, order of the documented types")
    return meta


def load_nir(source, T: Optional[int] = None, dt: Optional[float] = None, *, encoding: Optional[dict] = None,
             readout: Optional[str] = None, use_metadata: bool = True, name: Optional[str] = None) -> Network:
    """A float snnc Network from a NIR graph (a path to a .nir file, or a nir.NIRGraph).

    T: time steps per sample (default: the T stored by snnc's exporter). dt: the Forward-Euler step
    (default: graph metadata 'dt', else inferred as tau/r, else 1 for graphs without leaky neurons).
    The network's input is the Input node's shape (data of another layout reaches it through the
    layout rule of snnc.data, e.g. 1x28x28 images a 784 input).
    encoding: how data reaches the input (default DEFAULT_ENCODING: pixel/255 every step).
    readout: 'mean' or 'last' (default: docs/interop.md, "Output layer").
    """
    graph, stem = _read_graph(source)
    meta = _graph_meta(graph, use_metadata)
    dt, dt_source = resolve_dt(graph, dt)
    for key, node in graph.nodes.items():
        kind = _type(node)
        if kind == "NIRGraph":
            raise InputError(f"NIR node '{key}' is a subgraph (a recurrent layer such as RLeaky): "
                             f"snnc supports feed-forward networks only")
        if kind not in NEURON_TYPES + SYNAPSE_TYPES + ("Input", "Output", "Scale", "Flatten",
                                                       "SumPool2d", "AvgPool2d"):
            raise InputError(f"NIR node '{key}' ({kind}) is not supported by snnc")
    builder = _Builder(graph, dt, use_metadata)
    inputs = [k for k, n in graph.nodes.items() if _type(n) == "Input"]
    outputs = [k for k, n in graph.nodes.items() if _type(n) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(f"NIR graph must have one Input and one Output node, it has {len(inputs)} and "
                         f"{len(outputs)}")
    order = _topological_order(graph, builder.preds, builder.succs, meta.get("order") if meta else None)
    if order[0] != inputs[0]:
        raise InputError(f"NIR node '{order[0]}' has no input edge (only the Input node may)")
    for key in order:
        node = graph.nodes[key]
        kind = _type(node)
        if kind == "Input":
            builder.input(key, node)
        elif kind == "Output":
            continue
        elif kind in SYNAPSE_TYPES:
            builder.synapse(key, node)
        elif kind in ("SumPool2d", "AvgPool2d"):
            builder.pool(key, node)
        elif kind == "Flatten":
            builder.flatten(key, node)
        elif kind == "Scale":
            builder.scale(key, node)
        else:
            builder.neuron(key, node)
    readout_rule = _attach_readout(builder, outputs[0], readout, meta)

    encoding = dict(encoding or (meta["encoding"] if meta else DEFAULT_ENCODING))
    problem = encoding_problem(encoding)
    if problem:
        raise InputError(f"NIR graph: {problem}")
    if builder.input_scale != 1.0:
        encoding["scale"] = float(encoding["scale"]) * builder.input_scale
    T = T if T is not None else (meta["T"] if meta else None)
    if T is None:
        raise InputError("NIR graphs carry no number of time steps: pass T")
    T = check_steps(T, "NIR graph")
    if meta:
        metadata = dict(meta.get("metadata", {}))
        net_name = name or meta.get("name", stem)
        readout_mode = readout or meta.get("readout", readout_rule[0])
    else:
        metadata = {"source": "nir", "nir": {"dt": dt, "dt_source": dt_source, "readout": readout_rule[1],
                                             "notes": builder.notes}}
        net_name = name or stem
        readout_mode = readout or readout_rule[0]
    leftovers = [n.name for n in builder.nodes if n.name in builder.current and not _feeds_add(builder, n)]
    if leftovers:
        raise InputError(f"NIR graph: synapse(s) {leftovers} are not followed by neurons")
    net = Network(name=net_name, T=int(T), readout=readout_mode, nodes=builder.nodes, encoding=encoding,
                  metadata=metadata)
    net.validate()
    return net


def _feeds_add(builder: _Builder, node: Node) -> bool:
    return any(n.op == "add" and n.neuron is not None and node.name in n.inputs for n in builder.nodes)


def _attach_readout(builder: _Builder, output_key: str, readout: Optional[str], meta) -> tuple[str, str]:
    """Make the last node snnc's readout (a linear with an integrator); returns (default readout, rule)."""
    if readout is not None and readout not in ("mean", "last"):
        raise InputError(f"readout must be 'mean' or 'last', got {readout!r}")
    last = builder.source(builder.single_input(output_key))
    for node in builder.nodes:
        if node.neuron is not None and node.neuron.kind == "integrator" and node is not last:
            raise InputError(f"NIR node '{node.name}': a non-spiking (LI/I) layer inside the network is not "
                             f"supported; snnc uses an integrator only as the readout")
    if len(last.shape) != 1:
        raise InputError(f"the NIR output '{last.name}' has shape {list(last.shape)}: snnc needs a 1-D "
                         f"(class) output")
    if last is not builder.nodes[-1]:
        raise InputError(f"the NIR output '{last.name}' must be computed last")
    if last.neuron is not None and last.neuron.kind == "integrator":
        if last.op != "linear":
            raise InputError(f"the NIR readout '{last.name}' must be an Affine/Linear layer")
        return "mean", "the output layer's LI/I neurons are the readout integrator"
    if last.neuron is None:
        if last.op != "linear":
            raise InputError(f"the NIR output '{last.name}' must be an Affine/Linear layer")
        last.neuron = Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                             bias=np.zeros(last.shape), initial_state=np.zeros(last.shape), v_decay=0.0)
        builder.current.discard(last.name)
        return "last", "integrator appended to the output synapse: readout = sum over steps of its current"
    channels = last.shape[0]
    check_weight_count(channels * channels, "NIR graph: identity readout")
    builder.add(Node(name=builder.unique("readout"), op="linear", inputs=[last.name], shape=last.shape,
                     weight=np.eye(channels),
                     neuron=Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                                   bias=np.zeros(last.shape), initial_state=np.zeros(last.shape), v_decay=0.0)))
    return "last", "identity readout appended to the output spikes: readout = spike count per output neuron"
