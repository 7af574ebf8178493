"""Frontend: a NIR graph (snnTorch, Norse, Sinabs, SpikingJelly, Rockpool, Spyx, lava-dl, or snnc's
own export) becomes a float snnc Network.

NIR describes neurons as continuous-time ODEs; snnc runs discrete steps, and every producer
discretizes (and sometimes writes) them its own way: the producer's profile
(snnc.frontends.nir_semantics, docs/interop.md has every formula) gives each neuron node's decay,
input gain, threshold comparison and reset. NIR's literal reading, the default, is Forward Euler
at the step `dt`:

    LIF      tau dv/dt = (v_leak - v) + r I     ->  v_decay = dt/tau, input gain = r dt/tau,
                                                     bias = (dt/tau) (v_leak - v_reset)
    IF       dv/dt = r I                         ->  v_decay = 0, input gain = r dt
    CubaLIF  tau_syn dI/dt = -I + w_in S         ->  u_decay = dt/tau_syn, the synaptic input
                                                     scaled by w_in dt/tau_syn, then as LIF
    LI, I, CubaLI                                ->  the same, as the (non-spiking) readout
    Threshold                                    ->  a neuron with no memory (v_decay = 1)

A hard reset to a non-zero v_reset is expressed by measuring the membrane from v_reset
(threshold - v_reset, initial state -v_reset). The membrane starts at 0 (NIR does not say; the
producers start there).

Structure: nodes that sum several incoming edges add their inputs (NIR's convention); a synapse
reading a neuron's spikes and feeding the same neuron is that population's recurrent synapse
(snnTorch's RLeaky subgraphs, the braille networks' explicit edges); a Delay node before a synapse
becomes that synapse's axonal delay; a pool between a convolution and its neurons is composed
into the convolution (pooling currents is linear). Nested subgraphs are flattened.
snnc's own export (snnc.exporters.nir_export) keeps what NIR cannot say in node metadata under
"snnc" (soft reset, initial state, exact decays); with `use_metadata` those values are used.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from snnc.errors import InputError
from snnc.frontends import nir_semantics
from snnc.frontends.nir_semantics import Semantics
from snnc.ir import (Network, Neuron, Node, check_shape, check_steps, check_weight_count, conv_output_shape,
                     encoding_problem, pool_output_shape)

# What one input unit is worth when nothing else is said: 8-bit pixels, real value pixel/255,
# presented as the input current at every step (snnc's own direct encoding).
DEFAULT_ENCODING = {"kind": "direct", "scale": 1.0 / 255.0, "max": 255, "bits": 8,
                    "description": "pixel values 0-255 presented at every step; real input = pixel/255"}

# The arrays each neuron type's discrete form reads (nir_semantics.discretize).
NEURON_FIELDS = {"LIF": ("tau", "r", "v_leak"), "LI": ("tau", "r", "v_leak"),
                 "CubaLIF": ("tau_mem", "tau_syn", "r", "v_leak", "w_in"),
                 "CubaLI": ("tau_mem", "tau_syn", "r", "v_leak", "w_in"),
                 "IF": ("r",), "I": ("r",), "Threshold": ("threshold",)}
NEURON_TYPES = tuple(NEURON_FIELDS)
LEAKY_TYPES = ("LIF", "LI", "CubaLIF", "CubaLI")
INTEGRATOR_TYPES = ("LI", "I", "CubaLI")
SYNAPSE_TYPES = ("Affine", "Linear", "Conv2d")
METADATA_KEY = "snnc"              # per-node metadata written by snnc's exporter
GRAPH_METADATA_KEY = "snnc_network"  # graph metadata: JSON with name, T, readout, encoding, order
DT_INFER_TOLERANCE = 1e-6
TEXT_FIELDS = ("type", "padding", "metadata", "edges", "version")  # the rest of a node holds numbers
DELAY_STEP_TOLERANCE = 1e-9        # a Delay must be a whole number of steps to this relative accuracy


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
        # snnc checks every node itself: NIR's type checker refuses graphs that its producers wrote
        return nir.read(str(path), type_check=False), path.stem
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
    if len(shape) == 3 and values.size == shape[0]:   # one value per channel
        return np.broadcast_to(values.reshape(shape[0], 1, 1), shape).copy()
    raise InputError(f"NIR node '{key}': {what} of shape {list(values.shape)} does not fit the "
                     f"layer shape {list(shape)}")


# --- dt -----------------------------------------------------------------------------------------

def _time_constant_pairs(nodes: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(key, tau, r) of every leaky node: the membrane time constant and its resistance."""
    pairs = []
    for key, node in nodes.items():
        kind = _type(node)
        if kind in ("LIF", "LI"):
            pairs.append((key, _array(node.tau), _array(node.r)))
        elif kind in ("CubaLIF", "CubaLI"):
            pairs.append((key, _array(node.tau_mem), _array(node.r)))
    return pairs


def _positive_dt(value, where: str) -> float:
    value = np.asarray(value)
    if value.size != 1 or value.dtype.kind not in "iuf" or not np.isfinite(value).all() or not value > 0:
        raise InputError(f"{where} must be one positive number, got {str(value)[:40]!r}")
    return float(value.ravel()[0])


def resolve_dt(nodes: dict, metadata, dt: Optional[float],
               profile_dt: Optional[float] | str = None) -> tuple[Optional[float], str]:
    """The discretization step, and where it came from (documented in docs/interop.md): given,
    the graph's metadata, the producer's (profile_dt; None where each node's r gives it), else
    inferred for NIR's literal reading."""
    if dt is not None:
        if not dt > 0:
            raise InputError(f"dt must be positive, got {dt}")
        return float(dt), "given"
    graph_dt = metadata.get("dt") if isinstance(metadata, dict) else None
    if graph_dt is not None:
        return _positive_dt(graph_dt, "NIR graph metadata 'dt'"), "graph metadata 'dt'"
    if profile_dt == "r":
        return None, "recovered per node from r (the producer writes r = tau e^(-dt/tau) / dt)"
    if profile_dt is not None:
        return profile_dt, "the producer's exporter"
    pairs = _time_constant_pairs(nodes)
    if not pairs:
        return 1.0, "no leaky neurons: one step is one time unit"
    # snnTorch (and any exporter with unit input gain) writes r = tau/dt, so tau/r is dt.
    candidates = np.concatenate([(tau / r).ravel() for _, tau, r in pairs])
    reference = float(candidates[0])
    if not np.all(np.isfinite(candidates)) or reference <= 0 \
            or np.any(np.abs(candidates - reference) > DT_INFER_TOLERANCE * reference):
        raise InputError("cannot infer the time step dt from the NIR graph (tau/r differs between "
                         "neurons): pass --nir-semantics for the producer that wrote it, or dt")
    for key, _, r in pairs:
        if np.any(r <= 1.0):
            raise InputError(f"cannot infer dt: NIR node '{key}' has r <= 1, so tau/r would leave "
                             f"its membrane no memory; pass --nir-semantics for the producer that wrote it, or dt")
    return reference, "inferred as tau/r (unit input gain, snnTorch's convention r = tau/dt)"


# --- neurons ------------------------------------------------------------------------------------

def _neuron_from_nir(key: str, node, shape: tuple[int, ...], dt: float,
                     semantics: Semantics) -> tuple[Neuron, np.ndarray]:
    """The snnc neuron for a NIR neuron node under the producer's semantics, and the per-neuron
    gain on its synaptic input (folded into the synapse by the caller when it is not one number)."""
    kind = _type(node)
    profile = semantics.profile
    zeros = np.zeros(shape)
    params = {name: _broadcast(getattr(node, name), shape, key, name) for name in NEURON_FIELDS[kind]}
    stored = np.asarray(getattr(node, "r", 0.0))
    resolution = float(np.finfo(stored.dtype).resolution) if stored.dtype.kind == "f" else 1e-15
    rule = nir_semantics.discretize(profile, kind, params, dt, key, resolution)
    decay, syn_decay = np.asarray(rule.v_decay), np.asarray(rule.u_decay)
    if not (np.all(np.isfinite(decay)) and np.all(decay >= 0) and np.all(decay <= 1)):
        raise InputError(f"NIR node '{key}' ({kind}): the membrane decay {np.unique(decay)[:3]} per step is "
                         f"outside [0, 1] at dt = {dt}: the time constant is shorter than one step")
    if not (np.all(np.isfinite(syn_decay)) and np.all(syn_decay >= 0) and np.all(syn_decay <= 1)):
        raise InputError(f"NIR node '{key}' ({kind}): the current decay {np.unique(syn_decay)[:3]} per step "
                         f"is outside [0, 1] at dt = {dt}")
    v_decay = _uniform(decay, key, "membrane time constant")
    u_decay = _uniform(syn_decay, key, "synaptic time constant")
    leak = params.get("v_leak", zeros)
    gain = rule.gain * rule.input_scale
    if kind in INTEGRATOR_TYPES:
        return Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                      bias=v_decay * leak, initial_state=zeros.copy(), v_decay=v_decay, u_decay=u_decay), gain
    max_spikes = nir_semantics.spikes_per_step(semantics, key, kind)
    if kind == "Threshold":
        threshold, v_reset = params["threshold"], zeros.copy()
    else:
        threshold = _broadcast(node.v_threshold, shape, key, "v_threshold")
        v_reset = _broadcast(getattr(node, "v_reset", 0.0), shape, key, "v_reset")
    if semantics.reset == "zero" or kind == "Threshold":
        neuron = Neuron(kind="spiking", threshold=nir_semantics.fire_threshold(profile, threshold - v_reset),
                        reset="hard", reset_amount=None, bias=v_decay * (leak - v_reset),
                        initial_state=0.0 - v_reset, v_decay=v_decay, u_decay=u_decay, max_spikes=max_spikes)
    else:
        neuron = Neuron(kind="spiking", threshold=nir_semantics.fire_threshold(profile, threshold),
                        reset="soft", reset_amount=nir_semantics.subtract_amount(semantics, key, kind, threshold, v_decay),
                        bias=v_decay * leak, initial_state=zeros.copy(), v_decay=v_decay, u_decay=u_decay,
                        max_spikes=max_spikes)
    return neuron, gain


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
        neuron.max_spikes = int(meta.get("max_spikes", 1))
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

def _flatten(graph) -> tuple[dict, list[tuple[str, str]]]:
    """One flat graph: a nested subgraph's nodes become 'sub.key', edges to or from the subgraph
    itself lead to its Input and Output nodes, which are then bypassed."""
    nodes: dict = {}
    edges: list[tuple[str, str]] = []
    bypassed: list[str] = []

    def visit(g, prefix: str) -> tuple[list[str], list[str]]:
        ends = {}
        for key, node in g.nodes.items():
            if _type(node) == "NIRGraph":
                ends[key] = visit(node, f"{prefix}{key}.")
            else:
                nodes[prefix + key] = node

        def endpoint(key, side: int) -> str:
            if not isinstance(key, str):
                raise InputError(f"NIR graph: edge endpoint {key!r} is not a node name")
            if key in ends:
                if len(ends[key][side]) != 1:
                    raise InputError(f"NIR subgraph '{prefix}{key}' needs one Input and one Output node")
                return ends[key][side][0]
            return prefix + key

        edges.extend((endpoint(src, 1), endpoint(dst, 0)) for src, dst in g.edges)
        own = ([prefix + k for k, n in g.nodes.items() if _type(n) == "Input"],
               [prefix + k for k, n in g.nodes.items() if _type(n) == "Output"])
        if prefix:
            bypassed.extend(own[0] + own[1])
        return own

    visit(graph, "")
    for key in bypassed:
        preds = [src for src, dst in edges if dst == key]
        succs = [dst for src, dst in edges if src == key]
        edges = [(src, dst) for src, dst in edges if key not in (src, dst)]
        edges += [(src, dst) for src in preds for dst in succs]
        del nodes[key]
    return nodes, edges


def _recurrent_synapses(nodes: dict, preds: dict, succs: dict) -> dict[str, str]:
    """neuron key -> the Affine/Linear node that reads only its spikes and feeds only it back: the
    population's recurrent synapse. Their edges are taken out of preds and succs."""
    recurrent = {}
    for key, node in nodes.items():
        if _type(node) not in ("Affine", "Linear") or len(preds[key]) != 1 or preds[key] != succs[key]:
            continue
        neuron = preds[key][0]
        if _type(nodes[neuron]) not in NEURON_TYPES or _type(nodes[neuron]) in INTEGRATOR_TYPES:
            continue
        if neuron in recurrent:
            raise InputError(f"NIR node '{neuron}' has two recurrent synapses ('{recurrent[neuron]}', '{key}'): "
                             f"sum them into one")
        recurrent[neuron] = key
        preds[key], succs[key] = [], []
        preds[neuron].remove(key)
        succs[neuron].remove(key)
    return recurrent


class _Builder:
    """Turns NIR nodes (in topological order) into snnc nodes."""

    def __init__(self, nodes: dict, edges: list, dt: float, semantics: Semantics, use_metadata: bool):
        self.graph_nodes, self.dt, self.semantics, self.use_metadata = nodes, dt, semantics, use_metadata
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.ref: dict[str, str] = {}        # NIR key -> snnc node computing its output
        self.current: set[str] = set()       # snnc nodes whose output is a synaptic current
        self.delays: dict[str, np.ndarray] = {}   # Delay key -> steps, per element of its input
        self.lag: dict[str, int] = {}              # snnc node -> steps its spikes take to the next layer
        self.preds: dict[str, list[str]] = {k: [] for k in nodes}
        self.succs: dict[str, list[str]] = {k: [] for k in nodes}
        for src, dst in edges:
            if src not in nodes or dst not in nodes:
                raise InputError(f"NIR edge ({src!r}, {dst!r}) names a node that does not exist")
            self.preds[dst].append(src)
            self.succs[src].append(dst)
        self.recurrent = _recurrent_synapses(nodes, self.preds, self.succs)
        self.input_scale = 1.0
        self.notes: list[str] = [f"'{syn}' is the recurrent synapse of '{neuron}'"
                                 for neuron, syn in self.recurrent.items()]

    def add(self, node: Node) -> Node:
        if node.name in self.by_name:
            raise InputError(f"NIR graph: two nodes would both be called '{node.name}'")
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node

    def unique(self, base: str) -> str:
        name, index = base, 1
        while name in self.by_name or name in self.graph_nodes:
            index += 1
            name = f"{base}{index}"
        return name

    def source(self, key: str) -> Node:
        return self.by_name[self.ref[key]]

    def single_input(self, key: str) -> str:
        preds = self.preds[key]
        if len(preds) != 1:
            raise InputError(f"NIR node '{key}' ({_type(self.graph_nodes[key])}) needs exactly one "
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
                    f"NIR node '{key}' ({_type(self.graph_nodes[key])}) reads the synaptic current of "
                    f"'{pred}' directly: snnc needs neurons after every Affine/Linear/Conv2d (a pool "
                    f"between a Conv2d and its neurons is composed into the convolution; nothing else is)")
        if len(preds) == 1:
            return self.source(preds[0])
        sources = [self.source(p) for p in preds]
        self._same_shape(key, sources)
        total = self.add(Node(name=self.unique(f"{key}_sum"), op="add", inputs=[s.name for s in sources],
                              shape=sources[0].shape))
        self.lag[total.name] = self.common_lag(key, sources)
        return total

    @staticmethod
    def _same_shape(key, sources):
        if len({tuple(s.shape) for s in sources}) != 1:
            raise InputError(f"NIR node '{key}': its inputs have different shapes "
                             f"{[list(s.shape) for s in sources]}")

    # --- node kinds ---

    def input(self, key, node):
        where = f"NIR node '{key}' (Input)"
        dims = [int(x) for x in _array(node.input_type["input"], where).ravel()]
        if self._leading_batch(key, dims):
            self.notes.append(f"the leading batch dimension {dims[0]} of Input '{key}' {dims} dropped")
            dims = dims[1:]
        self.add(Node(name=key, op="input", inputs=[], shape=check_shape(dims, where)))
        self.ref[key] = key

    def _leading_batch(self, key: str, dims: list[int]) -> bool:
        """Whether the Input's first dimension is a batch (Norse's exporter keeps it): the synapses
        reading the input need exactly the remaining dimensions."""
        if len(dims) < 2 or not self.succs[key]:
            return False
        for succ in self.succs[key]:
            node = self.graph_nodes[succ]
            weight = np.shape(getattr(node, "weight", ()))
            if _type(node) in ("Affine", "Linear") and len(weight) == 2:
                if not (len(dims) == 2 and weight[1] == dims[1]):
                    return False
            elif _type(node) == "Conv2d" and len(weight) == 4:
                if not (len(dims) == 4 and weight[1] == dims[1]):
                    return False
            else:
                return False
        return True

    def synapse(self, key, node):
        kind = _type(node)
        source = self.value_input(key)
        weight = _array(node.weight, f"NIR node '{key}': weight")
        meta = node.metadata if isinstance(node.metadata, dict) else {}
        if kind in ("Affine", "Linear"):
            if self.semantics.profile.weights_transposed and weight.ndim == 2:
                weight = weight.T       # written (in, out)
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
        self.axonal_delay(key, out, source)
        self.add(out)
        self.ref[key] = out.name
        self.current.add(out.name)

    def axonal_delay(self, key: str, synapse: Node, source: Node) -> None:
        """The synapse's axonal delay per input element: a Delay node before it, plus the steps by
        which the producer's spikes reach the next layer (Profile.output_delay)."""
        steps = np.full(source.shape, self.lag.get(source.name, 0), dtype=np.int64)
        delayed = [pred for pred in self.preds.get(key, []) if pred in self.delays]
        if delayed:
            if len(self.preds[key]) != 1:
                raise InputError(f"NIR node '{key}': a Delay among several summed inputs is not supported")
            steps = steps + self.delays[delayed[0]].reshape(source.shape)
            self.notes.append(f"Delay '{delayed[0]}' is the axonal delay of '{key}'")
        if np.any(steps):
            synapse.delay = steps

    def common_lag(self, key: str, sources: list[Node]) -> int:
        """The output delay shared by spike tensors that are summed (they must agree)."""
        lags = {self.lag.get(source.name, 0) for source in sources}
        if len(lags) != 1:
            raise InputError(f"NIR node '{key}' sums spikes that reach it with different delays {sorted(lags)}")
        return lags.pop()

    def delay(self, key, node):
        """A Delay node: whole steps of delay per element, applied by the synapse it feeds."""
        source = self.source(self.single_input(key))
        for succ in self.succs[key]:
            if _type(self.graph_nodes[succ]) not in SYNAPSE_TYPES + NEURON_TYPES:
                raise InputError(f"NIR node '{key}' (Delay) feeds {_type(self.graph_nodes[succ])} '{succ}': snnc "
                                 f"delays the input of a synapse (Affine/Linear/Conv2d) or of neurons only")
        if source.name in self.current:
            raise InputError(f"NIR node '{key}' (Delay) delays a synaptic current: snnc delays spikes or "
                             f"the input before a synapse")
        if self.dt is None:
            raise InputError(f"NIR node '{key}' (Delay): the graph gives no time step to count its delay in; "
                             f"pass --dt")
        steps = _broadcast(node.delay, tuple(source.shape), key, "delay") / self.dt
        whole = np.round(steps)
        if not np.all(np.isfinite(steps)) or np.any(whole < 0) \
                or np.any(np.abs(steps - whole) > DELAY_STEP_TOLERANCE * np.maximum(1.0, whole)):
            raise InputError(f"NIR node '{key}' (Delay): delays {np.unique(steps)[:3]} steps at dt = {self.dt} "
                             f"are not whole non-negative steps; pass the dt that makes them whole")
        self.delays[key] = whole.astype(np.int64)
        self.ref[key] = source.name

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
        kernel = _pair(node.kernel_size, "kernel_size", key)
        stride = _pair(node.stride, "stride", key)
        padding = _pair(node.padding, "padding", key)
        if kernel[0] != kernel[1] or stride[0] != stride[1] or padding != (0, 0):
            raise InputError(f"NIR node '{key}' ({kind}): only square kernels and strides without padding "
                             f"are supported (kernel {kernel}, stride {stride}, padding {padding})")
        k, s = kernel[0], stride[0]
        preds = self.preds[key]
        if len(preds) == 1 and self.ref[preds[0]] in self.current:
            self._pool_into_conv(key, kind, preds[0], k, s)
            return
        source = self.value_input(key)
        shape = pool_output_shape(source.shape, k, s, f"NIR node '{key}' ({kind})")
        out = self.add(Node(name=key, op="avgpool" if kind == "AvgPool2d" else "sumpool", inputs=[source.name],
                            shape=shape, attrs={"kernel": k, "stride": s}))
        self.ref[key] = out.name
        self.lag[out.name] = self.lag.get(source.name, 0)

    def _pool_into_conv(self, key: str, kind: str, pred: str, k: int, s: int) -> None:
        """Pooling a convolution's current (conv -> pool -> neuron) is one convolution: kernel
        K + (k - 1) S at stride k S, the kernel summed over the pool's k x k offsets (divided by
        k^2 for an average); the output sizes agree because floor division nests."""
        conv = self.source(pred)
        if conv.op != "conv2d" or len(self.succs[pred]) != 1:
            raise InputError(f"NIR node '{key}' ({kind}) pools the current of '{pred}': snnc composes a pool "
                             f"only into a Conv2d that feeds nothing else")
        where = f"NIR node '{key}' ({kind})"
        pool_output_shape(conv.shape, k, s, where)
        (kh, kw), (sh, sw) = conv.attrs["kernel"], conv.attrs["stride"]
        out_channels, in_channels = conv.weight.shape[:2]
        check_weight_count(out_channels * in_channels * (kh + (k - 1) * sh) * (kw + (k - 1) * sw), where)
        weight = np.zeros((out_channels, in_channels, kh + (k - 1) * sh, kw + (k - 1) * sw))
        for a in range(k):
            for b in range(k):
                weight[:, :, a * sh:a * sh + kh, b * sw:b * sw + kw] += conv.weight
        per_window = 1.0 / (k * k) if kind == "AvgPool2d" else 1.0
        conv.weight = weight * per_window
        if conv.bias is not None:
            conv.bias = conv.bias * (k * k * per_window)
        conv.attrs = {"kernel": [int(weight.shape[2]), int(weight.shape[3])], "stride": [k * sh, k * sw],
                      "padding": list(conv.attrs["padding"])}
        conv.shape = conv_output_shape(self.by_name[conv.inputs[0]].shape, out_channels, conv.attrs["kernel"],
                                       conv.attrs["stride"], conv.attrs["padding"], where)
        self.ref[key] = conv.name
        self.notes.append(f"{kind} '{key}' composed into the convolution '{pred}' (it pools currents)")

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
        self.lag[out.name] = self.lag.get(source.name, 0)

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
                         f"({_type(self.graph_nodes[pred])}) cannot be expressed in snnc")

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
            self.axonal_delay(key, target, sources[0])
            self.notes.append(f"identity synapse inserted before the neurons of '{key}'")
        else:
            inputs = []
            for index, (pred, source) in enumerate(zip(preds, sources), start=1):
                if source.name in self.current:
                    if source.op not in ("linear", "conv2d") or len(self.succs[pred]) != 1:
                        raise InputError(f"NIR node '{key}' ({kind}): input '{pred}' must be a synapse "
                                         f"feeding only these neurons")
                    inputs.append(source)
                elif pred in self.delays:
                    raise InputError(f"NIR node '{key}' ({kind}): a Delay among several summed inputs is "
                                     f"not supported")
                else:
                    identity = self._identity_synapse(self.unique(f"{key}_identity{index}"), source)
                    self.axonal_delay(key, identity, source)
                    inputs.append(identity)
            self._same_shape(key, inputs)
            target = self.add(Node(name=key, op="add", inputs=[s.name for s in inputs], shape=inputs[0].shape))
        neuron, gain = _neuron_from_nir(key, node, tuple(target.shape), self.dt, self.semantics)
        if self.use_metadata and isinstance(meta.get(METADATA_KEY), dict):
            neuron = _apply_snnc_metadata(key, node, neuron, tuple(target.shape))
            gain = np.ones(1)   # the exact input gain is in the metadata
        if key in self.recurrent:
            self._recurrent_synapse(key, target)
        gains = np.unique(gain)
        if gains.size == 1:
            neuron.input_gain = neuron.input_gain * float(gains[0])
        else:
            self._fold_gain(key, target, gain)
        target.neuron = neuron
        self.ref[key] = target.name
        self.current.discard(target.name)
        if neuron.kind == "spiking" and self.semantics.profile.output_delay:
            self.lag[target.name] = self.semantics.profile.output_delay

    def _recurrent_synapse(self, key: str, target: Node) -> None:
        """The population's recurrent Affine/Linear: its weights read the previous step's spikes;
        a constant bias joins the feed-forward synapse's bias."""
        synapse_key = self.recurrent[key]
        synapse = self.graph_nodes[synapse_key]
        size = int(np.prod(target.shape))
        weight = _array(synapse.weight, f"NIR node '{synapse_key}': weight")
        if weight.shape != (size, size):
            raise InputError(f"NIR node '{synapse_key}': recurrent weight {list(weight.shape)} does not fit the "
                             f"{size} neurons of '{key}'")
        target.recurrent = weight
        bias = _array(synapse.bias, f"NIR node '{synapse_key}': bias").ravel() if _type(synapse) == "Affine" \
            else np.zeros(1)
        if not np.any(bias):
            return
        if target.op != "linear" or bias.shape != (size,):
            raise InputError(f"NIR node '{synapse_key}': a recurrent bias is supported only for neurons fed by "
                             f"one Affine/Linear")
        target.bias = bias if target.bias is None else target.bias + bias

    def _fold_gain(self, key: str, target: Node, gain: np.ndarray) -> None:
        """A per-neuron input gain moves into the synapse weights (one value per output channel),
        the recurrent ones included."""
        per_channel = gain.reshape(target.shape[0], -1)
        if not np.all(per_channel == per_channel[:, :1]):
            raise InputError(f"NIR node '{key}': the input gain (r dt/tau) varies inside a channel")
        factor = per_channel[:, 0]
        synapses = [target] if target.op != "add" else [self.by_name[n] for n in target.inputs]
        for syn in synapses:
            syn.weight = syn.weight * factor.reshape((-1,) + (1,) * (syn.weight.ndim - 1))
            if syn.bias is not None:
                syn.bias = syn.bias * factor
        if getattr(target, "recurrent", None) is not None:
            target.recurrent = target.recurrent * gain.reshape(-1, 1)
        self.notes.append(f"per-neuron input gain of '{key}' folded into its synapse weights")


def _topological_order(keys: list[str], preds, succs, preferred: Optional[list[str]]) -> list[str]:
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
        raise InputError(f"NIR graph has a loop through {stuck[:4]} that is not a population's own recurrent "
                         f"synapse (an Affine/Linear from its neurons back to them): snnc runs self-recurrent "
                         f"populations only")
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


SUPPORTED_TYPES = NEURON_TYPES + SYNAPSE_TYPES + ("Input", "Output", "Scale", "Flatten", "SumPool2d",
                                                 "AvgPool2d", "Delay")


def load_nir(source, T: Optional[int] = None, dt: Optional[float] = None, *, encoding: Optional[dict] = None,
             readout: Optional[str] = None, use_metadata: bool = True, name: Optional[str] = None,
             semantics: Optional[str] = None, assume: Optional[dict] = None) -> Network:
    """A float snnc Network from a NIR graph (a path to a .nir file, or a nir.NIRGraph).

    semantics: the producer's profile (nir_semantics.PROFILES: nir, snntorch, norse, sinabs,
    spikingjelly, rockpool, spyx, lava-dl; default: the producer the graph's metadata names, else
    NIR's literal reading). assume: the choices the graph does not record ({'reset': 'zero' |
    'subtract', 'spikes': 'single' | 'multi'}; default: the producer's). The semantics used and
    the warnings about what was assumed are in the network's metadata['nir']['semantics'].
    T: time steps per sample (default: the T stored by snnc's exporter). dt: the step (default:
    graph metadata 'dt', else the producer's, else inferred as tau/r, else 1 for graphs without
    leaky neurons). The network's input is the Input node's shape (data of another layout reaches
    it through the layout rule of snnc.data, e.g. 1x28x28 images a 784 input).
    encoding: how data reaches the input (default DEFAULT_ENCODING: pixel/255 every step).
    readout: 'mean' or 'last' (default: docs/interop.md, "Output layer").
    """
    graph, stem = _read_graph(source)
    meta = _graph_meta(graph, use_metadata)
    nodes, edges = _flatten(graph)
    for key, node in nodes.items():
        if _type(node) not in SUPPORTED_TYPES:
            raise InputError(f"NIR node '{key}' ({_type(node)}) is not supported by snnc")
    kinds = {_type(node) for node in nodes.values()}
    rules = nir_semantics.resolve(semantics, assume, graph.metadata,
                                  has_spiking=bool(kinds & (set(NEURON_TYPES) - set(INTEGRATOR_TYPES))),
                                  has_leak=bool(kinds & set(LEAKY_TYPES)), own_export=meta is not None,
                                  look_alike=nir_semantics.look_alike(nodes) if semantics is None else None)
    dt, dt_source = resolve_dt(nodes, graph.metadata, dt, rules.profile.dt)
    builder = _Builder(nodes, edges, dt, rules, use_metadata)
    inputs = [k for k, n in nodes.items() if _type(n) == "Input"]
    outputs = [k for k, n in nodes.items() if _type(n) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(f"NIR graph must have one Input and one Output node, it has {len(inputs)} and "
                         f"{len(outputs)}")
    feedback = set(builder.recurrent.values())    # read by their populations (_recurrent_synapse)
    order = _topological_order([k for k in nodes if k not in feedback], builder.preds, builder.succs,
                               meta.get("order") if meta else None)
    if order[0] != inputs[0]:
        raise InputError(f"NIR node '{order[0]}' has no input edge (only the Input node may)")
    steps = {"Input": builder.input, "SumPool2d": builder.pool, "AvgPool2d": builder.pool,
             "Flatten": builder.flatten, "Scale": builder.scale, "Delay": builder.delay,
             **{kind: builder.synapse for kind in SYNAPSE_TYPES}, **{kind: builder.neuron for kind in NEURON_TYPES}}
    for key in order:
        node = nodes[key]
        if _type(node) != "Output":
            steps[_type(node)](key, node)
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
                                             "semantics": rules.record(), "notes": builder.notes,
                                             "populations": {key: builder.ref[key] for key in order
                                                             if _type(nodes[key]) in NEURON_TYPES}}}
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
    identity = builder.add(Node(name=builder.unique("readout"), op="linear", inputs=[last.name], shape=last.shape,
                                weight=np.eye(channels),
                                neuron=Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                                              bias=np.zeros(last.shape), initial_state=np.zeros(last.shape),
                                              v_decay=0.0)))
    builder.axonal_delay(identity.name, identity, last)
    return "last", "identity readout appended to the output spikes: readout = spike count per output neuron"
