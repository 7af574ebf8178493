"""The Lava backend: a fixed-point snnc network as a graph of real Lava processes, run in Lava's
CPU simulator (`Loihi2SimCfg(select_tag="fixed_pt")`), spike for spike equal to the reference.

Process graph (docs/lava.md has the picture and the reasons):
- input: `lava.proc.io.source.RingBuffer` streaming the encoded samples one after the other;
- synapses: Lava's own `Conv` (a conv2d reading a producer directly), `Dense` (a linear layer,
  possibly after sum pooling and flatten, which are composed into its matrix) and `Sparse` (a
  conv2d after sum pooling: the unrolled, composed matrix). Each adds Lava's one-step delay.
  A synapse with axonal delays is Lava's `DelayDense` (the same matrix and a delay per synapse:
  delay k arrives k steps after the one-step latency); a recurrent synapse is a `Dense` from the
  population's s_out back to its own a_in (its one-step latency is the recurrence's step);
- neurons: snnc.lava_procs.SnncNeuron (snnc.execute.FixedNeuron's rule, per-neuron parameters), the
  readout integrator being one too; a ResNet add with a neuron is several synapse groups into one
  SnncNeuron (Lava sums an InPort's connections);
- SnncRelay: a SEW add (graded sum of spike tensors, zero latency) and the delay line that holds
  back the shorter branch of a residual connection so that both branches arrive together.

Latency alignment (by construction): a population whose longest synaptic path from the input
has d synapses is `d` steps deep; it works on logical step t of sample i at Lava step
i * period + t + d (0-based) and is idle before (no bias, no decay) and between samples. A
synapse group from a producer at depth p into a population at depth d gets a relay of d - 1 - p
steps. Samples are streamed back to back (period = T by default): each population restarts
(u = 0, v = initial state) at its own sample boundary, so no draining is needed between samples;
a network with delays or recurrent synapses streams every T + gap steps (sample_gap: what is in
flight in a DelayDense or a recurrent Dense arrives while the populations idle).
A run takes (samples - 1) * period + T + L steps, L being the readout's depth. The populations
write their outputs into .npy memmaps, which `LavaGraph.read` turns into a Trace in logical time.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snnc import fixedpoint, ir
from snnc.errors import DesignRuleError, InputError
from snnc.export_dir import artifact_writer
from snnc.passes.mapping import largest_delay, payload_bits
from snnc.passes.quantize import largest_outputs
from snnc.targets import is_integer

NAME = "lava"
ARTIFACT_DIR = "lava"
GRAPH_FILE = "graph.json"
ARRAYS_FILE = "network.npz"
FORMAT = "snnc-lava-graph"
FORMAT_VERSION = 1
SELECT_TAG = "fixed_pt"
# Lava's Dense/Sparse (bit-accurate models) clip weights to 8 bits and, in mixed-sign mode, drop
# the least significant bit; storing 2*w with weight_exp = -1 keeps every weight up to 127 exact
# (lava_weight_shift), and even weights up to 256 (slayer's exports) are stored as they are.
DENSE_WEIGHT_SHIFT = 1
DENSE_WEIGHT_LIMIT = 127
MIXED_WEIGHT_RANGE = (-256, 254)   # what the mixed-sign 8-bit synapse holds after dropping its low bit
LAVA_MAX_DELAY = 63   # the bit-accurate DelayDense holds 6-bit delays
LAVA_RUNTIME_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"


def import_lava_runtime():
    """Import Lava's multiprocessing runtime before Lava does. On first import it calls
    multiprocessing.set_start_method('fork'), which fails once anything has fixed the start method,
    as numba does when it starts the thread pool of snnc's integer kernels. Lava needs fork: the
    fixed method is forgotten, and Lava sets it again."""
    if LAVA_RUNTIME_MODULE in sys.modules:
        return
    if multiprocessing.get_start_method(allow_none=True) is not None:
        multiprocessing.set_start_method(None, force=True)
    importlib.import_module(LAVA_RUNTIME_MODULE)


# --- layouts --------------------------------------------------------------------------------
# snnc orders a feature map (channel, y, x); Lava orders it (x, y, channel). A Lava vector is the
# C-order flattening of Lava's layout, so "flat" and "xyc" ports differ only by a reshape.

def lava_shape(shape) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(tuple(shape)))


def to_lava(array: np.ndarray, shape) -> np.ndarray:
    """[..., *shape] in snnc order -> [..., *lava_shape(shape)]."""
    lead = array.ndim - len(shape)
    return np.transpose(array, tuple(range(lead)) + tuple(lead + i for i in reversed(range(len(shape)))))


def from_lava(array: np.ndarray, shape) -> np.ndarray:
    """[..., n] (flattened Lava order) -> [..., *shape] in snnc order."""
    lead = array.shape[:-1]
    rev = array.reshape(lead + lava_shape(shape))
    k = len(lead)
    return np.transpose(rev, tuple(range(k)) + tuple(k + i for i in reversed(range(len(shape)))))


def _lava_order(shape) -> np.ndarray:
    """For each position of the flattened Lava layout, the flat snnc index it holds."""
    size = int(np.prod(shape))
    return to_lava(np.arange(size).reshape(shape), shape).reshape(-1)


# --- linear maps between producers and synapses (snnc order) --------------------------------

def _conv_matrix(node: ir.Node, in_shape) -> "object":
    import scipy.sparse as sp

    weight = np.asarray(node.weight, dtype=np.int64)
    co, ci, kh, kw = weight.shape   # ci: the input channels of one group
    channels, height, width = in_shape
    _, out_h, out_w = node.shape
    sh, sw = node.attrs["stride"]
    ph, pw = node.attrs["padding"]
    dh, dw = ir.conv_dilation(node.attrs)
    per_group = co // ir.conv_groups(node.attrs)
    o_c, o_y, o_x, i_c, k_y, k_x = np.meshgrid(np.arange(co), np.arange(out_h), np.arange(out_w),
                                               np.arange(ci), np.arange(kh), np.arange(kw),
                                               indexing="ij", sparse=True)
    iy, ix = o_y * sh - ph + k_y * dh, o_x * sw - pw + k_x * dw
    shape6 = (co, out_h, out_w, ci, kh, kw)
    valid = np.broadcast_to((iy >= 0) & (iy < height) & (ix >= 0) & (ix < width), shape6)
    rows = np.broadcast_to((o_c * out_h + o_y) * out_w + o_x, shape6)[valid]
    source_channel = (o_c // per_group) * ci + i_c    # output channel block g reads input block g
    cols = np.broadcast_to((source_channel * height + iy) * width + ix, shape6)[valid]
    vals = np.broadcast_to(weight[:, None, None, :, :, :], shape6)[valid]
    keep = vals != 0
    return sp.csr_matrix((vals[keep], (rows[keep], cols[keep])),
                         shape=(co * out_h * out_w, channels * height * width), dtype=np.int64)


def _pool_matrix(node: ir.Node, in_shape) -> "object":
    import scipy.sparse as sp

    k, s = node.attrs["kernel"], node.attrs["stride"]
    channels, height, width = in_shape
    _, out_h, out_w = node.shape
    c, oy, ox, ky, kx = np.meshgrid(np.arange(channels), np.arange(out_h), np.arange(out_w),
                                    np.arange(k), np.arange(k), indexing="ij")
    rows = ((c * out_h + oy) * out_w + ox).reshape(-1)
    cols = ((c * height + oy * s + ky) * width + ox * s + kx).reshape(-1)
    return sp.csr_matrix((np.ones(rows.size, dtype=np.int64), (rows, cols)),
                         shape=(channels * out_h * out_w, channels * height * width))


def _view_matrix(views: list[ir.Node], src_shape):
    """The sumpool/flatten views between a producer and a synapse as one integer matrix
    [synapse input, producer] (snnc order), and the synapse input's shape."""
    import scipy.sparse as sp

    matrix = sp.identity(int(np.prod(src_shape)), dtype=np.int64, format="csr")
    shape = tuple(src_shape)
    for view in views:
        if view.op == "sumpool":
            matrix = _pool_matrix(view, shape) @ matrix
        shape = tuple(view.shape)
    return matrix, shape


def _composed_matrix(synapse: ir.Node, views: list[ir.Node], src_shape):
    """The synapse after its sumpool/flatten views as one integer matrix [out, in], snnc order."""
    import scipy.sparse as sp

    matrix, shape = _view_matrix(views, src_shape)
    if synapse.op == "conv2d":
        last = _conv_matrix(synapse, shape)
    else:
        last = sp.csr_matrix(np.asarray(synapse.weight, dtype=np.int64))
    return (last @ matrix).tocsr()


def _factor_views(factors: dict) -> list[ir.Node]:
    return [ir.Node(name=v["name"], op=v["op"], inputs=[], shape=tuple(v["shape"]),
                    attrs={"kernel": v.get("kernel"), "stride": v.get("stride")}) for v in factors["views"]]


def _lava_delays(factors: dict, delay: np.ndarray, name: str) -> np.ndarray:
    """DelayDense's delay matrix [out, in] in Lava's order for a synapse whose input elements have
    axonal delays `delay` (snnc order, shaped like the synapse's input): every producer element
    takes the delay of the input element its views feed (a producer element pooled into two
    inputs of different delays has no single delay: refused)."""
    views, source_shape = _factor_views(factors), tuple(factors["source_shape"])
    feeds = _view_matrix(views, source_shape)[0].tocoo()
    per_input = np.asarray(delay, dtype=np.int64).reshape(-1)[feeds.row]
    size = int(np.prod(source_shape))
    low, high = np.full(size, np.iinfo(np.int64).max), np.zeros(size, np.int64)
    np.minimum.at(low, feeds.col, per_input)
    np.maximum.at(high, feeds.col, per_input)
    if np.any((low != high) & (low != np.iinfo(np.int64).max)):
        raise DesignRuleError(f"layer '{name}': overlapping pooling feeds one spike into inputs of different "
                              f"axonal delays, which one Lava DelayDense synapse cannot hold")
    rows = int(np.prod(factors["out_shape"]))
    return np.ascontiguousarray(np.broadcast_to(high[_lava_order(source_shape)], (rows, size)), dtype=int)


def lava_weight_shift(weight: np.ndarray, name: str) -> int:
    """The exponent s with which Lava's mixed-sign 8-bit synapse holds every weight w exactly: it
    stores w * 2^s, clipped to [-256, 255] with its lowest bit dropped, and shifts the sums by -s."""
    weight = np.asarray(weight, dtype=np.int64)
    for shift in (DENSE_WEIGHT_SHIFT, 0):
        stored = weight << shift
        if MIXED_WEIGHT_RANGE[0] <= stored.min(initial=0) and stored.max(initial=0) <= MIXED_WEIGHT_RANGE[1] \
                and not np.any(stored & 1):
            return shift
    raise DesignRuleError(f"layer '{name}': weights in [{int(weight.min())}, {int(weight.max())}] do not fit Lava's "
                          f"8-bit synapse (|w| <= {DENSE_WEIGHT_LIMIT}, or even and within {list(MIXED_WEIGHT_RANGE)})")


def _lava_matrix(factors: dict, weight: np.ndarray, name: str):
    """The Dense/Sparse matrix of a synapse after its views, in Lava's order, pre-shifted: the
    artifact stores these factors (a composed matrix is up to k*k*Cin*kh*kw times larger)."""
    views = _factor_views(factors)
    synapse = ir.Node(name=name, op=factors["op"], inputs=[], shape=tuple(factors["out_shape"]),
                      attrs=dict(factors["attrs"]), weight=weight)
    source_shape = tuple(factors["source_shape"])
    matrix = _composed_matrix(synapse, views, source_shape)
    matrix = matrix[_lava_order(synapse.shape)][:, _lava_order(source_shape)].tocsr()
    matrix.sum_duplicates()
    matrix.sort_indices()
    stored = matrix.data.astype(np.int64) << factors["weight_shift"]
    if matrix.nnz and not (MIXED_WEIGHT_RANGE[0] <= stored.min() and stored.max() <= MIXED_WEIGHT_RANGE[1]
                           and not np.any(stored & 1)):
        raise DesignRuleError(f"layer '{name}': composed weight {int(np.abs(matrix.data).max())} does not fit "
                              f"Lava's 8-bit synapse (limit {DENSE_WEIGHT_LIMIT})")
    matrix.data = stored.astype(np.int32)
    return matrix


# --- the graph description --------------------------------------------------------------------

def _uniform_delay(node: ir.Node) -> int | None:
    """The delay every input element of a synaptic node takes (0 without delays), or None where
    they differ (a DelayDense then holds one per synapse)."""
    if node.delay is None:
        return 0
    values = np.unique(node.delay)
    return int(values[0]) if values.size == 1 else None


def _matrix_entry(name: str, node: str, shape: tuple[int, int], factors: dict, message_bits: int,
                  weight: np.ndarray) -> dict:
    """A Dense, Sparse or DelayDense process as graph.json describes it: the factors its matrix is
    composed from, its [out, in] shape and the weight mapping above."""
    shift = lava_weight_shift(weight, name)
    return {"name": name, "node": node, "shape": list(shape), **factors, "weight_shift": shift,
            "weight_exp": -shift, "num_weight_bits": 8, "sign_mode": "mixed", "num_message_bits": message_bits}


@dataclass
class _Producer:
    """Something synapses read from: the source, a spiking population, a relay."""

    process: str
    shape: tuple[int, ...]       # its Lava port shape
    ir_shape: tuple[int, ...]
    depth: int
    max_value: int


class _SpecBuilder:
    def __init__(self, net: ir.Network):
        self.net = net
        self.processes: list[dict] = []
        self.connections: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.producers: dict[str, _Producer] = {}
        self.delayed: dict[tuple[str, int], _Producer] = {}
        self.largest = largest_outputs(net)   # what each producer sends: its synapses' message bits

    def connect(self, source: _Producer | tuple, target: str, port: str, shape) -> None:
        name, out_port, out_shape = ((source.process, "s_out", source.shape)
                                     if isinstance(source, _Producer) else source)
        shape = tuple(shape)
        if int(np.prod(out_shape)) != int(np.prod(shape)):
            raise DesignRuleError(f"Lava graph: cannot connect {name} {out_shape} to {target} {shape}")
        self.connections.append({"from": [name, out_port], "to": [target, port],
                                 "reshape": None if tuple(out_shape) == shape else list(shape)})

    def add_process(self, entry: dict, **arrays) -> None:
        for key, value in arrays.items():
            self.arrays[f"{entry['name']}/{key}"] = value
            entry[key] = f"{entry['name']}/{key}"
        self.processes.append(entry)

    def delayed_producer(self, producer: _Producer, steps: int) -> _Producer:
        if steps == 0:
            return producer
        key = (producer.process, steps)
        if key not in self.delayed:
            name = f"{producer.process}.delay{steps}"
            self.add_process({"type": "relay", "name": name, "shape": list(producer.shape),
                              "delay": steps})
            self.connect(producer, name, "a_in", producer.shape)
            self.delayed[key] = _Producer(name, producer.shape, producer.ir_shape,
                                          producer.depth + steps, producer.max_value)
        return self.delayed[key]

    def trace_views(self, synapse: ir.Node) -> tuple[_Producer, list[ir.Node]]:
        views = []
        name = synapse.inputs[0]
        while name not in self.producers:
            node = self.net.node(name)
            if node.op not in ("sumpool", "flatten"):
                raise DesignRuleError(f"layer '{synapse.name}': the Lava backend cannot feed a synapse "
                                      f"from '{name}' ({node.op} without a neuron)")
            views.insert(0, node)
            name = node.inputs[0]
        return self.producers[name], views

    def synapse(self, synapse: ir.Node, source: _Producer, views: list[ir.Node], target: str,
                target_shape, use_conv: bool) -> None:
        bits = max(1, int(source.max_value).bit_length())
        name = f"{synapse.name}.synapse"
        if use_conv:
            weight = np.asarray(synapse.weight, dtype=np.int64)
            lava_weight = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)).astype(np.int32)
            in_shape = lava_shape(source.ir_shape)
            self.add_process({"type": "conv", "name": name, "node": synapse.name,
                              "input_shape": list(in_shape),
                              "padding": list(reversed(synapse.attrs["padding"])),
                              "stride": list(reversed(synapse.attrs["stride"])),
                              "dilation": list(reversed(ir.conv_dilation(synapse.attrs))),
                              "groups": ir.conv_groups(synapse.attrs),
                              "num_message_bits": bits}, weight=lava_weight)
            self.connect(source, name, "s_in", in_shape)
            self.connect((name, "a_out", lava_shape(synapse.shape)), target, "a_in", target_shape)
            return
        factors = {"op": synapse.op, "attrs": synapse.attrs, "out_shape": list(synapse.shape),
                   "source_shape": list(source.ir_shape),
                   "views": [{"name": v.name, "op": v.op, "shape": list(v.shape),
                              **({"kernel": v.attrs["kernel"], "stride": v.attrs["stride"]}
                                 if v.op == "sumpool" else {})} for v in views]}
        weight = np.asarray(synapse.weight, dtype=np.int64)
        rows, cols = int(np.prod(synapse.shape)), int(np.prod(source.ir_shape))
        entry = _matrix_entry(name, synapse.name, (rows, cols), factors, bits, weight)
        if any(v.op == "sumpool" and v.attrs["kernel"] > v.attrs["stride"] for v in views):
            _lava_matrix(entry, weight, name)  # overlapping pools can sum weights: check now
        arrays = {"weight": weight.astype(np.int32)}
        largest = largest_delay(synapse)
        if largest:     # Lava's DelayDense: the same matrix, with a delay per synapse
            if largest > LAVA_MAX_DELAY:
                raise DesignRuleError(f"layer '{synapse.name}': axonal delay of {largest} steps exceeds the "
                                      f"{LAVA_MAX_DELAY} of Lava's DelayDense")
            _lava_delays(factors, synapse.delay, name)   # refuse delays that views merge, now
            kind, arrays["delay"] = "delay_dense", np.asarray(synapse.delay, dtype=np.int64)
        else:   # a linear layer's composed matrix is dense; an unrolled convolution is sparse
            kind = "dense" if synapse.op == "linear" else "sparse"
        self.add_process(dict(entry, type=kind), **arrays)
        self.connect(source, name, "s_in", (cols,))
        self.connect((name, "a_out", (rows,)), target, "a_in", target_shape)

    def recurrent(self, node: ir.Node, shape) -> None:
        """The population's own spikes back into its a_in through a Dense: Lava's one-step synaptic
        latency gives exactly the previous step's spikes (docs/lava.md)."""
        name, size = f"{node.name}.recurrent", int(np.prod(node.shape))
        factors = {"op": "linear", "attrs": {}, "out_shape": list(node.shape), "source_shape": list(node.shape),
                   "views": []}
        weight = np.asarray(node.recurrent, dtype=np.int64)
        self.add_process(dict(_matrix_entry(name, node.name, (size, size), factors, payload_bits(node, self.net), weight),
                              type="dense", recurrent=True), weight=weight.astype(np.int32))
        self.connect((node.name, "s_out", shape), name, "s_in", (size,))
        self.connect((name, "a_out", (size,)), node.name, "a_in", shape)

    def neuron(self, node: ir.Node) -> None:
        if node.op in ir.SYNAPTIC_OPS:
            groups = [node]
        elif node.op == "add":
            groups = [self.net.node(name) for name in node.inputs]
            for group in groups:
                if group.op not in ir.SYNAPTIC_OPS or group.neuron is not None:
                    raise DesignRuleError(f"layer '{node.name}': an add with a neuron must sum "
                                          f"synapses without neurons ('{group.name}' is {group.op})")
        else:
            raise DesignRuleError(f"layer '{node.name}': a neuron after {node.op} is not supported")
        sources = [self.trace_views(group) for group in groups]
        depth = max(source.depth for source, _ in sources) + 1
        use_conv = len(node.shape) == 3 and all(
            group.op == "conv2d" and not views and len(source.ir_shape) == 3 and _uniform_delay(group) is not None
            for group, (source, views) in zip(groups, sources))
        shape = lava_shape(node.shape) if use_conv else (int(np.prod(node.shape)),)
        n = node.neuron
        per_neuron = lambda values: to_lava(np.asarray(  # noqa: E731
            np.zeros(node.shape) if values is None else values, dtype=np.int64), node.shape).reshape(shape)
        self.add_process({"type": "neuron", "name": node.name, "node": node.name, "shape": list(shape),
                          "ir_shape": list(node.shape), "depth": depth, "kind": n.kind,
                          "reset": n.reset, "du": int(n.u_decay), "dv": int(n.v_decay),
                          "max_spikes": int(n.max_spikes), "input_shift": n.input_shift,
                          "activation": n.activation, "accumulate": bool(n.accumulate),
                          "message_shift": int(n.message_shift)},
                         threshold=per_neuron(n.threshold), bias=per_neuron(n.bias),
                         reset_amount=per_neuron(n.reset_amount),
                         initial_state=per_neuron(n.initial_state))
        for group, (source, views) in zip(groups, sources):
            # a Conv reads a producer whose every element is delayed alike through a relay, which
            # holds it back that many steps more than the pipeline needs (the gap covers sample ends)
            held = _uniform_delay(group) if use_conv else 0
            aligned = self.delayed_producer(source, depth - 1 - source.depth + held)
            self.synapse(group, aligned, views, node.name, shape, use_conv)
        if node.recurrent is not None:
            self.recurrent(node, shape)
        if node.spiking:
            self.producers[node.name] = _Producer(node.name, shape, tuple(node.shape), depth, self.largest[node.name])

    def sew_add(self, node: ir.Node) -> None:
        missing = [name for name in node.inputs if name not in self.producers]
        if missing:
            raise DesignRuleError(f"layer '{node.name}': the Lava backend adds spikes or sums of spikes "
                                  f"only ('{missing[0]}' is neither)")
        inputs = [self.producers[name] for name in node.inputs]
        depth = max(p.depth for p in inputs)
        shape = lava_shape(node.shape)
        self.add_process({"type": "relay", "name": node.name, "node": node.name, "shape": list(shape),
                          "delay": 0})
        for producer in inputs:
            self.connect(self.delayed_producer(producer, depth - producer.depth), node.name, "a_in", shape)
        self.producers[node.name] = _Producer(node.name, shape, tuple(node.shape), depth,
                                              sum(p.max_value for p in inputs))

    def build(self) -> dict:
        net = self.net
        for node in net.nodes:
            if node.op == "input":
                shape = lava_shape(node.shape)
                self.add_process({"type": "source", "name": node.name, "node": node.name,
                                  "shape": list(shape), "ir_shape": list(node.shape)})
                self.producers[node.name] = _Producer(node.name, shape, tuple(node.shape), 0, self.largest[node.name])
            elif node.neuron is not None:
                self.neuron(node)
            elif node.op == "add":
                self.sew_add(node)
            elif node.op in ("sumpool", "flatten", "conv2d", "linear"):
                continue  # views composed into their consumers / synapse groups of an add
            else:
                raise DesignRuleError(f"layer '{node.name}': op {node.op} is not supported on Lava")
        readout = net.output_node
        depths = {p["name"]: p["depth"] for p in self.processes if p["type"] == "neuron"}
        arithmetic = {key: net.arithmetic[key] for key in ("state_bits", "decay_bits", "activation_shift",
                                                            "fire_rule", "current_overflow", "voltage_overflow")}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "network": net.name,
                "T": int(net.T), "readout": net.readout, "readout_process": readout.name,
                "source": net.input_node.name, "latency": depths[readout.name], "gap": sample_gap(net),
                "spiking": [node.name for node in net.spiking_nodes()],
                "arithmetic": arithmetic, "select_tag": SELECT_TAG,
                "processes": self.processes, "connections": self.connections}


def sample_gap(net: ir.Network) -> int:
    """Idle steps a sample needs after its T steps before the next may enter: what is still in
    flight then (its largest axonal delay, its spikes on a recurrent synapse) must arrive while the
    populations are idle, since a DelayDense or Dense holds it across the sample boundary."""
    largest = max(largest_delay(node) for node in net.nodes)
    recurrent = any(node.recurrent is not None for node in net.nodes)
    return max(largest, int(recurrent))


def lava_spec(net: ir.Network) -> tuple[dict, dict[str, np.ndarray]]:
    """The Lava process graph of a fixed network: (graph description, arrays by key)."""
    if not net.fixed:
        raise InputError(f"network '{net.name}' is not fixed-point: quantize it before running on Lava")
    builder = _SpecBuilder(net)
    spec = builder.build()
    return spec, builder.arrays


# --- the artifact ---------------------------------------------------------------------------

@artifact_writer("Lava process graph", order=50)
def write_artifacts(compiled, directory, options=None) -> list[str]:
    """Write lava/graph.json and lava/network.npz (deterministic bytes) for compiled.fixed."""
    spec, arrays = lava_spec(compiled.fixed)
    folder = Path(directory) / ARTIFACT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GRAPH_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    (folder / ARRAYS_FILE).write_bytes(ir.deterministic_npz(arrays))
    return [f"{ARTIFACT_DIR}/{GRAPH_FILE}", f"{ARTIFACT_DIR}/{ARRAYS_FILE}"]


# The ports each process type has: (input ports, output ports).
PORTS = {"source": ((), ("s_out",)), "neuron": (("a_in",), ("s_out",)), "relay": (("a_in",), ("s_out",)),
         "conv": (("s_in",), ("a_out",)), "dense": (("s_in",), ("a_out",)), "sparse": (("s_in",), ("a_out",)),
         "delay_dense": (("s_in",), ("a_out",))}
SYNAPSE_TYPES = ("conv", "dense", "sparse", "delay_dense")
_ARRAY_KEYS = {"conv": ("weight",), "dense": ("weight",), "sparse": ("weight",), "delay_dense": ("weight", "delay"),
               "neuron": ("threshold", "bias", "reset_amount", "initial_state")}


def _check_neuron_entry(entry: dict) -> None:
    """A neuron process's scalars: its kind, count limit, activation and shifts."""
    counts, where = entry.get("max_spikes", 1), f"Lava graph: process '{entry['name']}'"
    if not (is_integer(counts) and 1 <= counts <= ir.MAX_SPIKES_PER_STEP):
        raise InputError(f"{where} has max_spikes {counts!r}, not an integer in 1..{ir.MAX_SPIKES_PER_STEP}")
    if entry.get("kind") not in ir.NEURON_KINDS or entry.get("activation", "identity") not in ir.ACTIVATIONS \
            or not isinstance(entry.get("accumulate", True), bool):
        raise InputError(f"{where} has kind {entry.get('kind')!r} / activation {entry.get('activation')!r} / "
                         f"accumulate {entry.get('accumulate')!r}, which snnc's neuron does not run")
    for key in ("input_shift", "message_shift"):
        value = entry.get(key)
        if value is not None and not (is_integer(value) and 0 <= value < 32):
            raise InputError(f"{where} has {key} {value!r}, not an integer in 0..31")


def _check_spec(spec, arrays: dict) -> None:
    """Refuse a Lava graph description that names unknown processes, ports or arrays (a damaged or
    hand-edited lava/graph.json) before any Lava process is made."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT or spec.get("format_version") != FORMAT_VERSION:
        raise InputError(f"not an snnc Lava graph version {FORMAT_VERSION}")
    processes, connections = spec.get("processes"), spec.get("connections")
    if not isinstance(processes, list) or not isinstance(connections, list):
        raise InputError("Lava graph: 'processes' and 'connections' must be lists")
    kinds = {}
    for entry in processes:
        if not isinstance(entry, dict) or entry.get("type") not in PORTS or not isinstance(entry.get("name"), str):
            raise InputError(f"Lava graph: unknown process {str(entry)[:80]}")
        if entry["name"] in kinds:
            raise InputError(f"Lava graph: process '{entry['name']}' is defined twice")
        kinds[entry["name"]] = entry["type"]
        for key in _ARRAY_KEYS.get(entry["type"], ()):
            if entry.get(key) not in arrays:
                raise InputError(f"Lava graph: process '{entry['name']}' refers to a missing array ({key})")
        if entry["type"] in ("dense", "sparse", "delay_dense") and not (
                entry.get("weight_shift") in (0, DENSE_WEIGHT_SHIFT) and entry.get("weight_exp") == -entry["weight_shift"]):
            raise InputError(f"Lava graph: process '{entry['name']}' has weight_shift {entry.get('weight_shift')!r} / "
                             f"weight_exp {entry.get('weight_exp')!r}, not 0 or {DENSE_WEIGHT_SHIFT} and its negative")
        if entry["type"] == "neuron":
            _check_neuron_entry(entry)
    spiking = spec.get("spiking")
    if not isinstance(spiking, list):
        raise InputError("Lava graph: 'spiking' must list the spiking processes")
    for name in (spec.get("source"), spec.get("readout_process"), *spiking):
        if kinds.get(name) not in ("source", "neuron"):
            raise InputError(f"Lava graph: '{name}' is not a source or neuron process of the graph")
    for link in connections:
        try:
            (src, out_port), (dst, in_port) = link["from"], link["to"]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"Lava graph: malformed connection {str(link)[:80]}")
        if src not in kinds or out_port not in PORTS[kinds[src]][1]:
            raise InputError(f"Lava graph: connection from unknown process or port {src}.{out_port}")
        if dst not in kinds or in_port not in PORTS[kinds[dst]][0]:
            raise InputError(f"Lava graph: connection to unknown process or port {dst}.{in_port}")
    if not isinstance(spec.get("T"), int) or spec["T"] < 1 or spec.get("readout") not in ("mean", "last") \
            or not isinstance(spec.get("latency"), int) or spec["latency"] < 0 \
            or not isinstance(spec.get("gap", 0), int) or spec.get("gap", 0) < 0:
        raise InputError("Lava graph: T, readout, latency or gap is missing or invalid")


def load_artifact(export) -> tuple[dict, dict[str, np.ndarray]]:
    """The Lava graph an export directory ships (lava/graph.json + lava/network.npz), checked."""
    graph, arrays_file = f"{ARTIFACT_DIR}/{GRAPH_FILE}", f"{ARTIFACT_DIR}/{ARRAYS_FILE}"
    spec = export.read_json(graph)
    try:
        with np.load(export.path(arrays_file), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, AttributeError) as error:
        raise InputError(f"{export.root}: unreadable {arrays_file} ({error})")
    try:
        _check_spec(spec, arrays)
    except InputError as error:
        raise InputError(f"{export.root}/{graph}: {error}")
    return spec, arrays


# --- building and running the processes -------------------------------------------------------

@dataclass
class LavaGraph:
    """Lava process objects of one network, ready to run.

    source: the RingBuffer; neurons: node name -> SnncNeuron (the readout included); synapses:
    name -> Dense / Sparse / Conv; relays: name -> SnncRelay; sink: the readout SnncNeuron (it
    writes its per-step state to `record_dir`); num_steps: how many steps to run.
    """

    spec: dict
    source: object
    neurons: dict
    synapses: dict
    relays: dict
    sink: object
    num_steps: int
    samples: int
    steps: int
    period: int
    record_dir: Path
    record_voltages: tuple = ()
    files: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    _owned_dir: object = field(default=None, repr=False)

    @property
    def processes(self) -> dict:
        return {self.spec["source"]: self.source, **self.neurons, **self.synapses, **self.relays}

    def run(self) -> "LavaGraph":
        """Run all steps in Lava's simulator (fixed_pt models) and stop it, even on error."""
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg

        config = Loihi2SimCfg(select_tag=self.spec.get("select_tag", SELECT_TAG))
        started = time.perf_counter()
        try:
            self.source.create_runtime(run_cfg=config)
            running = time.perf_counter()
            self.source.run(condition=RunSteps(num_steps=self.num_steps), run_cfg=config)
            self.timings = {"compile_and_start_s": running - started,
                            "run_s": time.perf_counter() - running}
        finally:
            self.source.stop()
        return self

    def _file(self, name: str, what: str) -> Path:
        return Path(self.files[name][what])

    def read(self):
        """The results as a snnc.execute.Trace in logical time ([T, samples, ...])."""
        from snnc.execute import Trace

        shapes = {p["name"]: tuple(p["ir_shape"]) for p in self.spec["processes"] if p["type"] == "neuron"}

        def logical(name, key, dtype):   # read from the memory-mapped record: one copy in memory
            record = np.load(self._file(name, key), mmap_mode="r")
            return np.ascontiguousarray(from_lava(record, shapes[name]).swapaxes(0, 1), dtype=dtype)

        # uint8 spikes or counts, int32 sigma-delta messages: the record's own dtype
        spikes = {name: logical(name, "record_path", None) for name in self.spec["spiking"]}
        readout = self.spec["readout_process"]
        steps = np.load(self._file(readout, "record_path")).swapaxes(0, 1).astype(np.int64)
        voltages = {name: logical(name, "voltage_path", np.int64) for name in self.record_voltages}
        overflow = {}
        for name in shapes:
            counts = np.load(self._file(name, "overflow_path")).sum(axis=0)
            overflow[name] = {"current": int(counts[0]), "voltage": int(counts[1])}
        return Trace(spikes=spikes, readout_steps=np.ascontiguousarray(steps),
                     readout=fixedpoint.readout(steps, self.spec["readout"]),
                     voltages=voltages, overflow=overflow)

    def close(self) -> None:
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _lava_inputs(spec: dict, inputs: np.ndarray, period: int, num_steps: int) -> np.ndarray:
    """The RingBuffer data [*port shape, num_steps]: sample i's step t at column i * period + t."""
    source = next(p for p in spec["processes"] if p["type"] == "source")
    ir_shape = tuple(source["ir_shape"])
    steps, samples = inputs.shape[:2]
    if tuple(inputs.shape[2:]) != ir_shape:
        raise InputError(f"inputs have per-sample shape {tuple(inputs.shape[2:])}, the network expects {ir_shape}")
    data = np.zeros((num_steps,) + tuple(source["shape"]), dtype=np.int32)
    lava = to_lava(np.asarray(inputs), ir_shape)
    for i in range(samples):
        data[i * period:i * period + steps] = lava[:, i]
    return np.ascontiguousarray(np.moveaxis(data, 0, -1))


def _make_process(entry: dict, arrays: dict, schedule: dict, files: dict):
    kind = entry["type"]
    get = lambda key: arrays[entry[key]]  # noqa: E731
    if kind == "conv":
        from lava.proc.conv.process import Conv

        return Conv(weight=get("weight"), input_shape=tuple(entry["input_shape"]),
                    padding=tuple(entry["padding"]), stride=tuple(entry["stride"]),
                    dilation=tuple(entry.get("dilation", (1, 1))), groups=int(entry.get("groups", 1)),
                    num_message_bits=entry["num_message_bits"], name=entry["name"])
    if kind in ("dense", "sparse", "delay_dense"):
        from lava.utils.weightutils import SignMode

        matrix = _lava_matrix(entry, get("weight"), entry["name"])

        common = dict(num_message_bits=entry["num_message_bits"], weight_exp=entry["weight_exp"],
                      num_weight_bits=entry["num_weight_bits"], sign_mode=SignMode.MIXED,
                      name=entry["name"])
        if kind == "dense":
            from lava.proc.dense.process import Dense

            return Dense(weights=matrix.toarray(), **common)
        if kind == "delay_dense":
            from lava.proc.dense.process import DelayDense

            return DelayDense(weights=matrix.toarray(), delays=_lava_delays(entry, get("delay"), entry["name"]),
                              **common)
        from lava.proc.sparse.process import Sparse

        return Sparse(weights=matrix, **common)
    if kind == "relay":
        from snnc.lava_procs.process import SnncRelay

        return SnncRelay(shape=tuple(entry["shape"]), delay=entry["delay"], name=entry["name"])
    if kind == "neuron":
        from snnc.lava_procs.process import SnncNeuron

        return SnncNeuron(shape=tuple(entry["shape"]), threshold=get("threshold"), bias=get("bias"),
                          reset_amount=get("reset_amount"), initial_state=get("initial_state"),
                          du=entry["du"], dv=entry["dv"], kind=entry["kind"], reset=entry["reset"],
                          max_spikes=entry.get("max_spikes", 1), input_shift=entry.get("input_shift"),
                          activation=entry.get("activation", "identity"), accumulate=entry.get("accumulate", True),
                          message_shift=entry.get("message_shift", 0),
                          start=entry["depth"], name=entry["name"], **schedule, **files[entry["name"]])
    raise InputError(f"Lava graph: unknown process type '{kind}'")


def _new_memmap(path: Path, dtype, shape) -> str:
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    return str(path)


def build_lava_graph(network, inputs=None, images=None, record_dir=None, period=None,
                     record_voltages=()) -> LavaGraph:
    """Instantiate the Lava processes of `network` (a fixed ir.Network or a (spec, arrays) pair
    from lava_spec / load_artifact), fed with `inputs` (encoded, [T, B, ...]) or
    `images` (uint8 [B, ...], direct-encoded). Results are written below `record_dir` (a temporary
    directory owned by the graph when None). Run with `graph.run()` or Lava's own
    `graph.source.run(RunSteps(graph.num_steps), Loihi2SimCfg(select_tag="fixed_pt"))`, then
    `graph.read()`."""
    import_lava_runtime()
    spec, arrays = lava_spec(network) if isinstance(network, ir.Network) else network
    source_entry = next(p for p in spec["processes"] if p["type"] == "source")
    if inputs is None:
        if images is None:
            images = np.zeros((1,) + tuple(source_entry["ir_shape"]), dtype=np.int64)
        images = np.asarray(images)
        inputs = np.broadcast_to(images, (spec["T"],) + images.shape)
    inputs = np.asarray(inputs)
    if inputs.ndim < 2 or not np.issubdtype(inputs.dtype, np.integer):
        raise InputError("Lava backend inputs must be integers shaped [T, batch, ...]")
    steps, samples = int(inputs.shape[0]), int(inputs.shape[1])
    if samples < 1 or steps < 1:
        raise InputError("Lava backend needs at least one sample and one step")
    gap = int(spec.get("gap", 0))
    period = steps + gap if period is None else int(period)
    if period < steps + gap:
        raise InputError(f"period {period} is shorter than the {steps} steps of a sample"
                         + (f" and the {gap} idle steps its delays and recurrent synapses need" if gap else ""))
    num_steps = (samples - 1) * period + steps + int(spec["latency"])
    neurons = [p for p in spec["processes"] if p["type"] == "neuron"]
    unknown = set(record_voltages) - {p["name"] for p in neurons}
    if unknown:
        raise InputError(f"cannot record voltages of {sorted(unknown)}: not neuron layers")
    owned = None
    if record_dir is None:
        owned = tempfile.TemporaryDirectory(prefix="snnc-lava-")
        record_dir = owned.name
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    files, stems = {}, set()
    for index, p in enumerate(neurons):
        name, size = p["name"], int(np.prod(p["shape"]))
        stem = _safe(name) if _safe(name) not in stems else f"{_safe(name)}_{index}"
        stems.add(stem)
        out = {"spiking": np.uint8, "sigma_delta": np.int32}.get(p["kind"], np.int64)
        files[name] = {
            "record_path": _new_memmap(record_dir / f"{stem}.out.npy", out, (samples, steps, size)),
            "overflow_path": _new_memmap(record_dir / f"{stem}.overflow.npy", np.int64, (samples, 2)),
            "voltage_path": (_new_memmap(record_dir / f"{stem}.v.npy", np.int64, (samples, steps, size))
                             if name in record_voltages else None)}
    schedule = dict(period=period, steps=steps, samples=samples, **spec["arithmetic"])
    from lava.proc.io.source import RingBuffer

    processes = {}
    try:
        for entry in spec["processes"]:
            if entry["type"] == "source":
                processes[entry["name"]] = RingBuffer(data=_lava_inputs(spec, inputs, period, num_steps))
            else:
                processes[entry["name"]] = _make_process(entry, arrays, schedule, files)
        for link in spec["connections"]:
            (src, out_port), (dst, in_port) = link["from"], link["to"]
            port = getattr(processes[src], out_port)
            if link.get("reshape") is not None:
                port = port.reshape(tuple(link["reshape"]))
            port.connect(getattr(processes[dst], in_port))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, AssertionError) as error:
        raise InputError(f"Lava graph: a process or connection does not fit its arrays or shapes "
                         f"({type(error).__name__}: {str(error)[:120]})")
    by_type = lambda kind: {p["name"]: processes[p["name"]] for p in spec["processes"] if p["type"] in kind}  # noqa: E731
    return LavaGraph(spec=spec, source=processes[spec["source"]], neurons=by_type(("neuron",)),
                     synapses=by_type(SYNAPSE_TYPES), relays=by_type(("relay",)),
                     sink=processes[spec["readout_process"]], num_steps=num_steps, samples=samples,
                     steps=steps, period=period, record_dir=record_dir,
                     record_voltages=tuple(record_voltages), files=files, _owned_dir=owned)


def run(network, inputs, record_voltages=(), period=None):
    """Execute a fixed network (or a (spec, arrays) Lava graph) in Lava's simulator; a Trace in
    logical time, equal to the reference's."""
    graph = build_lava_graph(network, inputs=inputs, period=period, record_voltages=record_voltages)
    try:
        graph.run()
        return graph.read()
    finally:
        graph.close()


def run_export(export, inputs, record_voltages=(), period=None):
    """The backend interface on an export: its Lava artifact as written, on encoded inputs [T, B, ...]."""
    return run(load_artifact(export), inputs, record_voltages=record_voltages, period=period)


# --- cross-check against Lava's own LIF -------------------------------------------------------

def bias_mant_exp(bias: np.ndarray, mant_bits: int = 13, exp_bits: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Exact (mantissa, exponent) pairs with bias == mant << exp, as Lava's LIF takes them."""
    bias = np.asarray(bias, dtype=np.int64)
    mant_hi, mant_lo = 2 ** (mant_bits - 1) - 1, -(2 ** (mant_bits - 1))
    mant, exp = bias.copy(), np.zeros_like(bias)
    for _ in range(2 ** exp_bits - 1):
        shift = (mant > mant_hi) | (mant < mant_lo)
        if not shift.any():
            break
        if np.any(mant[shift] % 2):
            break
        mant = np.where(shift, mant >> 1, mant)
        exp = exp + shift
    if np.any(mant > mant_hi) or np.any(mant < mant_lo) or np.any((mant << exp) != bias):
        raise DesignRuleError("a bias is not representable as a 13-bit mantissa << 3-bit exponent")
    return mant, exp


def _lif_layers(net: ir.Network) -> list[tuple[ir.Node, str, list[ir.Node]]]:
    """(spiking node, producer name, views) of a chain that Lava's LIF can run, or DesignRuleError."""
    arithmetic = net.arithmetic
    lava_rules = dict(fixedpoint.LAVA_LIF_REGISTERS, fire_rule=fixedpoint.LAVA_LIF_FIRE_RULE)
    for key, value in lava_rules.items():
        if arithmetic.get(key) != value:
            raise DesignRuleError(f"Lava's LIF needs {key} = {value!r}, the network has {arithmetic.get(key)!r}")
    layers, producers = [], {net.input_node.name}
    for node in net.spiking_nodes():
        n = node.neuron
        if node.op not in ir.SYNAPTIC_OPS:
            raise DesignRuleError(f"layer '{node.name}': Lava's LIF takes one synapse group ({node.op})")
        if n.reset != "hard":
            raise DesignRuleError(f"layer '{node.name}': Lava's LIF resets hard only")
        if n.max_spikes > 1:
            raise DesignRuleError(f"layer '{node.name}': Lava's LIF sends binary spikes, not counts "
                                  f"(max_spikes {n.max_spikes})")
        if node.recurrent is not None or node.delayed:
            raise DesignRuleError(f"layer '{node.name}': the Lava-LIF cross-check builds feed-forward Dense "
                                  f"synapses only (no recurrent synapses, no delays)")
        thresholds, shift = np.unique(n.threshold), fixedpoint.LAVA_LIF_THRESHOLD_SHIFT
        if thresholds.size != 1 or thresholds[0] % (1 << shift) \
                or not 0 <= thresholds[0] >> shift < 2 ** fixedpoint.LAVA_LIF_THRESHOLD_BITS:
            raise DesignRuleError(f"layer '{node.name}': Lava's LIF needs one threshold vth << {shift} "
                                  f"(vth < 2^{fixedpoint.LAVA_LIF_THRESHOLD_BITS}) per population, "
                                  f"got {thresholds[:4]}")
        views, name = [], node.inputs[0]
        while name not in producers:
            view = net.node(name)
            if view.op not in ("sumpool", "flatten"):
                raise DesignRuleError(f"layer '{node.name}': not a chain of synapses")
            views.insert(0, view)
            name = view.inputs[0]
        layers.append((node, name, views))
        producers.add(node.name)
    return layers


def run_lava_lif(net: ir.Network, inputs: np.ndarray, record_dir=None) -> dict[str, np.ndarray]:
    """Spikes of every spiking layer [T, B, *shape] from a graph of Lava's own `LIF` (bit-accurate
    model) and `Dense` processes: the cross-check that snnc's integer reference is Lava's LIF.

    For hard-reset networks with fire rule '>' and one threshold vth << 6 per layer (a network
    quantized for targets/loihi1.yaml, say). Lava's LIF has no start step, so each layer starts at
    its depth by Var.set: its bias mantissa and v (u too when du < 4095) are written at its start
    step and the bias cleared after its T steps; samples are `T + L` steps apart (drained).
    """
    import_lava_runtime()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.utils.weightutils import SignMode

    from snnc.lava_procs.process import MemmapSink

    layers = _lif_layers(net)
    inputs = np.asarray(inputs)
    steps, samples = inputs.shape[:2]
    depth, top = {net.input_node.name: 0}, {net.input_node.name: int(net.encoding.get("max", 255))}
    for node, source, _ in layers:
        depth[node.name], top[node.name] = depth[source] + 1, 1
    latency = max(depth.values())
    period = steps + latency
    num_steps = samples * period
    owned = tempfile.TemporaryDirectory(prefix="snnc-lava-lif-") if record_dir is None else None
    folder = Path(owned.name if owned else record_dir)
    data = np.zeros((num_steps, int(np.prod(net.input_node.shape))), dtype=np.int32)
    for i in range(samples):
        data[i * period:i * period + steps] = inputs[:, i].reshape(steps, -1)
    procs = {net.input_node.name: RingBuffer(data=np.ascontiguousarray(data.T))}
    events: dict[int, list] = {}
    paths = {}
    for node, source, views in layers:
        n = node.neuron
        matrix = _composed_matrix(node, views, net.node(source).shape).toarray()
        if np.abs(matrix).max() > DENSE_WEIGHT_LIMIT:
            raise DesignRuleError(f"layer '{node.name}': composed weights exceed 8 bits")
        dense = Dense(weights=(matrix << DENSE_WEIGHT_SHIFT).astype(np.int32), weight_exp=-DENSE_WEIGHT_SHIFT,
                      num_weight_bits=8, sign_mode=SignMode.MIXED,
                      num_message_bits=max(1, top[source].bit_length()))
        mant, exp = bias_mant_exp(np.asarray(n.bias).reshape(-1))
        size = mant.size
        vth = int(np.asarray(n.threshold).flat[0]) >> fixedpoint.LAVA_LIF_THRESHOLD_SHIFT
        lif = LIF(shape=(size,), du=int(n.u_decay), dv=int(n.v_decay), vth=vth,
                  bias_mant=np.zeros(size, dtype=np.int64), bias_exp=exp, u=0, v=0, name=node.name)
        paths[node.name] = _new_memmap(folder / f"{_safe(node.name)}.lif.npy", np.int32, (num_steps, size))
        sink = MemmapSink(shape=(size,), path=paths[node.name], steps=num_steps)
        procs[source].s_out.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        lif.s_out.connect(sink.a_in)
        procs[node.name] = lif
        initial = np.asarray(n.initial_state, dtype=np.int64).reshape(-1)
        for i in range(samples):
            start = i * period + depth[node.name]
            events.setdefault(start, []).append((lif.bias_mant, mant))
            events[start].append((lif.v, initial))
            if fixedpoint.current_keep(n.u_decay, net.arithmetic["decay_bits"]):
                events[start].append((lif.u, np.zeros(size, dtype=np.int64)))
            events.setdefault(start + steps, []).append((lif.bias_mant, np.zeros(size, dtype=np.int64)))
    source = procs[net.input_node.name]
    cuts = sorted(step for step in events if step < num_steps) + [num_steps]
    try:
        done = 0
        for cut in cuts:
            if cut > done:
                source.run(condition=RunSteps(num_steps=cut - done), run_cfg=Loihi2SimCfg(select_tag=SELECT_TAG))
                done = cut
            for var, value in events.get(cut, []) if cut < num_steps else []:
                var.set(np.asarray(value))
    finally:
        source.stop()
    spikes = {}
    for node, _, _ in layers:
        record = np.load(paths[node.name])
        rows = np.arange(samples)[None, :] * period + depth[node.name] + np.arange(steps)[:, None]
        spikes[node.name] = record[rows].reshape((steps, samples) + tuple(node.shape)).astype(np.uint8)
    if owned:
        owned.cleanup()
    return spikes
