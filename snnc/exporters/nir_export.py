"""Export a float snnc Network as a NIR graph (docs/interop.md, "snnc -> NIR").

Each snnc node becomes its synapse (Affine/Linear/Conv2d, AvgPool2d/SumPool2d, Flatten) followed by a
NIR neuron node named "<node>.<type>" (LIF, IF, CubaLIF, LI, I, CubaLI); a residual `add` with a neuron
becomes the neuron node itself (named like the add) with one edge per synapse, since NIR sums a
node's incoming edges; an `add` without neuron (SEW) becomes a Scale of ones with several inputs.

Continuous-time parameters at step dt (the inverse of snnc.frontends.nir_frontend's Forward Euler):
tau = dt / v_decay, r = input_gain tau / dt, v_leak = bias tau / dt, v_threshold = the float64 just
below snnc's threshold (NIR fires on v > v_threshold, snnc on H >= threshold).

Recurrent synapses become a Linear "<node>.recurrent" (weight [N, N], metadata snnc_op
"recurrent") on an edge from the neuron node back into it (NIR sums a node's incoming edges; the
loop's edge carries the previous step's spikes); only on a 1-d population, since NIR has no reshape
back from a flat Linear. Axonal delays become a Delay "<node>.delay" (delay = steps * dt, shaped
like the synapse's input, metadata snnc_op "delay" and snnc_delay_steps) on the edge into the
synapse.

What NIR cannot say goes into each neuron node's metadata under "snnc": the exact decays and gain,
soft reset and its amount, the initial state (IMP), the bias of leak-free neurons; the list of
features other tools will not see is in metadata "snnc_not_in_nir". The graph metadata holds "dt"
and "snnc_network" (JSON: name, T, readout, encoding, network metadata, node order), so that
load_nir(export_nir(net)) reproduces the network exactly.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from snnc.errors import InputError
from snnc.export_dir import artifact_writer, write_bytes
from snnc.frontends.nir_frontend import GRAPH_METADATA_KEY, METADATA_KEY
from snnc.ir import Network, Node, conv_dilation, conv_groups

DEFAULT_DT = 1e-4   # snnTorch's exporter and importer use this step


def _bias_to_move(node: Node) -> Optional[np.ndarray]:
    """Per output channel, the bias of a leak-free neuron (IF/I) divided by its input gain: NIR's
    IF and I have no constant term, but with no current memory (u_decay = 1) a constant b on the
    membrane is exactly a synapse bias b / gain. None when that does not apply."""
    n = node.neuron
    if n is None or float(n.v_decay) != 0.0 or float(n.u_decay) != 1.0 or float(n.input_gain) == 0.0:
        return None
    bias = np.broadcast_to(np.asarray(n.bias, dtype=np.float64), tuple(node.shape)).reshape(node.shape[0], -1)
    if not np.any(bias != 0) or not np.all(bias == bias[:, :1]):
        return None
    return bias[:, 0] / float(n.input_gain)


def _neuron_node(net: Network, node: Node, dt: float, bias_moved: bool = False):
    """The NIR neuron node for node.neuron, with its "snnc" metadata."""
    import nir

    n = node.neuron
    shape = tuple(node.shape)
    full = lambda value: np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()  # noqa: E731
    bias = full(n.bias)
    gain = float(n.input_gain)
    exact = {"kind": n.kind, "reset": n.reset, "v_decay": float(n.v_decay), "u_decay": float(n.u_decay),
             "input_gain": gain, "mpr": bool(n.mpr)}
    if n.max_spikes != 1:   # NIR's neurons fire one spike per step
        exact["max_spikes"] = int(n.max_spikes)
    missing = []
    if np.any(bias != 0):
        exact["bias"] = bias
    if np.any(np.asarray(n.initial_state) != 0):
        exact["initial_state"] = full(n.initial_state)
        missing.append("initial state")
    if n.reset == "soft":
        exact["reset_amount"] = full(n.reset_amount)
        missing.append("soft reset (NIR resets to v_reset)")
    if n.mpr:
        raise InputError(f"node '{node.name}': fold MPR first (snnc.passes.fold_all)")
    vd, ud = float(n.v_decay), float(n.u_decay)
    if not (0.0 <= vd <= 1.0 and 0.0 < ud <= 1.0):
        raise InputError(f"node '{node.name}': decays v={vd}, u={ud} are not float-network fractions")
    with np.errstate(divide="ignore"):
        tau = np.full(shape, dt / vd) if vd > 0 else None
    spiking = n.kind == "spiking"
    if spiking:
        v_threshold = np.nextafter(full(n.threshold), -np.inf)
    if ud < 1.0:
        if vd == 0.0:
            raise InputError(f"node '{node.name}': a current-based neuron without membrane leak has no NIR "
                             f"node (CubaLIF needs a finite tau_mem)")
        tau_syn = np.full(shape, dt / ud)
        common = dict(tau_syn=tau_syn, tau_mem=tau, r=np.full(shape, gain / vd), v_leak=bias / vd,
                      w_in=tau_syn / dt)
        suffix, nir_node = ("cubalif", nir.CubaLIF(**common, v_threshold=v_threshold, v_reset=np.zeros(shape))) \
            if spiking else ("cubali", nir.CubaLI(**common))
    elif vd > 0.0:
        common = dict(tau=tau, r=np.full(shape, gain / vd), v_leak=bias / vd)
        suffix, nir_node = ("lif", nir.LIF(**common, v_threshold=v_threshold, v_reset=np.zeros(shape))) \
            if spiking else ("li", nir.LI(**common))
    else:
        if np.any(bias != 0) and not bias_moved:
            missing.append("bias (IF/I neurons have no leak term)")
        r = np.full(shape, gain / dt)
        suffix, nir_node = ("if", nir.IF(r=r, v_threshold=v_threshold, v_reset=np.zeros(shape))) \
            if spiking else ("i", nir.I(r=r))
    nir_node.metadata = {METADATA_KEY: exact}
    if missing:
        nir_node.metadata["snnc_not_in_nir"] = "; ".join(missing)
    return suffix, nir_node


def _dense_kernel(node: Node, weight: np.ndarray) -> np.ndarray:
    """A grouped conv's kernel as the dense one it equals (zero between groups): NIR's type
    inference reads the input channels from the kernel, so it holds grouped kernels wrongly."""
    groups = conv_groups(node.attrs)
    if groups == 1:
        return weight
    out, per_group = weight.shape[:2]
    dense = np.zeros((out, per_group * groups) + weight.shape[2:])
    for o in range(out):
        block = o // (out // groups)
        dense[o, block * per_group:(block + 1) * per_group] = weight[o]
    return dense


def _synapse_node(node: Node, source_shape: tuple[int, ...], extra_bias: Optional[np.ndarray] = None):
    """The NIR synapse of a linear/conv2d node. `extra_bias` (a neuron's bias moved here) is added to
    the NIR bias; the metadata then records snnc's own synapse bias ("snnc_no_bias" or
    "snnc_bias") so that the import can undo the move exactly."""
    import nir

    channels = node.weight.shape[0]
    own = None if node.bias is None else np.asarray(node.bias, dtype=np.float64)
    bias = own if extra_bias is None else (np.zeros(channels) if own is None else own) + extra_bias
    metadata = {}
    if extra_bias is not None:
        metadata = {"snnc_no_bias": True} if own is None else {"snnc_bias": own}
    weight = np.asarray(node.weight, dtype=np.float64)
    if node.op == "linear":
        syn = nir.Linear(weight=weight) if bias is None else nir.Affine(weight=weight, bias=bias)
    else:
        syn = nir.Conv2d(input_shape=tuple(int(x) for x in source_shape[1:]), weight=_dense_kernel(node, weight),
                         stride=tuple(int(x) for x in node.attrs["stride"]),
                         padding=tuple(int(x) for x in node.attrs["padding"]),
                         dilation=conv_dilation(node.attrs), groups=1,
                         bias=np.zeros(channels) if bias is None else bias)
        if bias is None:
            metadata = {"snnc_no_bias": True}
    syn.metadata = metadata
    return syn


def _delay_node(node: Node, dt: float):
    """node.delay (steps) as NIR's Delay, y(t) = x(t - tau) with tau = steps * dt."""
    import nir

    steps = np.asarray(node.delay, dtype=np.int64)
    delay = nir.Delay(delay=steps.astype(np.float64) * dt)
    delay.metadata = {"snnc_op": "delay", "snnc_delay_steps": steps}
    return delay


def _recurrent_node(node: Node):
    """node.recurrent as the Linear on the loop from the neuron node back into itself."""
    import nir

    if len(node.shape) != 1:
        raise InputError(f"node '{node.name}': recurrent weights on a {list(node.shape)} population have no NIR "
                         f"form (NIR has no reshape from the flat recurrent Linear back to the layer's shape)")
    recurrent = nir.Linear(weight=np.asarray(node.recurrent, dtype=np.float64))
    recurrent.metadata = {"snnc_op": "recurrent"}
    return recurrent


def export_nir(net: Network, path=None, dt: float = DEFAULT_DT):
    """The NIR graph of a float (folded) snnc network; written to `path` (.nir, HDF5) when given."""
    import nir

    if net.fixed:
        raise InputError(f"network '{net.name}' is fixed-point: export its float (folded) form to NIR")
    if not dt > 0:
        raise InputError(f"dt must be positive, got {dt}")
    for node in net.nodes:
        if node.bn is not None:
            raise InputError(f"node '{node.name}' has a batch norm: fold the network first (snnc.passes.fold_all)")
    shapes = {node.name: tuple(node.shape) for node in net.nodes}
    nodes: dict = {}
    edges: list[tuple[str, str]] = []
    out_key: dict[str, str] = {}  # snnc node -> NIR key of its output
    order: list[str] = []
    moved: dict[str, np.ndarray] = {}   # synapse node -> neuron bias / gain carried as its NIR bias
    for node in net.nodes:
        extra = _bias_to_move(node)
        if extra is not None:
            moved[node.name if node.op != "add" else node.inputs[0]] = extra

    def put(key: str, nir_node) -> None:
        if key in nodes:
            raise InputError(f"NIR export: two nodes would both be called '{key}'")
        nodes[key] = nir_node
        order.append(key)

    def loop_back(node: Node, neuron_key: str) -> None:
        """The recurrent Linear on the edges neuron -> recurrent -> neuron."""
        if node.recurrent is not None:
            put(f"{node.name}.recurrent", _recurrent_node(node))
            edges.extend([(neuron_key, f"{node.name}.recurrent"), (f"{node.name}.recurrent", neuron_key)])

    for node in net.nodes:
        name = node.name
        if node.op == "input":
            put(name, nir.Input(input_type=np.array(node.shape)))
            out_key[name] = name
            continue
        sources = [out_key[i] for i in node.inputs]
        if node.op == "add":
            if node.neuron is None:
                junction = nir.Scale(scale=np.ones(node.shape))
                junction.metadata = {"snnc_op": "add"}
                put(name, junction)
                edges += [(s, name) for s in sources]
                out_key[name] = name
                continue
            suffix, neuron = _neuron_node(net, node, dt, bias_moved=_bias_to_move(node) is not None)
            neuron.metadata["snnc_op"] = "add"
            put(name, neuron)
            edges += [(s, name) for s in sources]
            out_key[name] = name
            loop_back(node, name)
            continue
        if node.op in ("linear", "conv2d"):
            if node.delayed:
                put(f"{name}.delay", _delay_node(node, dt))
                edges += [(s, f"{name}.delay") for s in sources]
                sources = [f"{name}.delay"]
            put(name, _synapse_node(node, shapes[node.inputs[0]], moved.get(name)))
        elif node.op in ("avgpool", "sumpool"):
            k, s = int(node.attrs["kernel"]), int(node.attrs["stride"])
            cls = nir.AvgPool2d if node.op == "avgpool" else nir.SumPool2d
            put(name, cls(kernel_size=np.array([k, k]), stride=np.array([s, s]), padding=np.array([0, 0])))
        elif node.op == "flatten":
            flat = nir.Flatten(input_type={"input": np.array(shapes[node.inputs[0]])}, start_dim=0, end_dim=-1)
            flat.metadata = {"snnc_op": "flatten"}
            put(name, flat)
        else:
            raise InputError(f"node '{name}': op '{node.op}' has no NIR form")
        edges += [(s, name) for s in sources]
        out_key[name] = name
        if node.neuron is not None:
            suffix, neuron = _neuron_node(net, node, dt, bias_moved=name in moved)
            key = f"{name}.{suffix}"
            put(key, neuron)
            edges.append((name, key))
            out_key[name] = key
            loop_back(node, key)
    output = net.output_node
    put("output", nir.Output(output_type=np.array(output.shape)))
    edges.append((out_key[output.name], "output"))
    network_meta = {"name": net.name, "T": net.T, "readout": net.readout, "encoding": net.encoding,
                    "metadata": net.metadata, "order": order}
    graph = nir.NIRGraph(nodes=nodes, edges=edges,
                         metadata={"dt": float(dt), GRAPH_METADATA_KEY: json.dumps(network_meta, sort_keys=True),
                                   "producer": "snnc"})
    if path is not None:
        path = Path(path)
        buffer = io.BytesIO()  # in memory first: the HDF5 library crashes on a full disk
        nir.write(buffer, graph)
        write_bytes(path, buffer.getvalue())
    return graph


@artifact_writer("NIR graph", order=30)
def write_artifact(compiled, directory, options: dict) -> list[str]:
    """Export writer: the folded float network as `network.nir` (deterministic
    bytes). options["nir_dt"] sets dt (default 1e-4). Nothing is written for a network that has no
    float form (one read from a netx file)."""
    folded = getattr(compiled, "folded", None)
    if folded is None or folded.fixed:
        return []
    export_nir(folded, Path(directory) / "network.nir", dt=float(options.get("nir_dt", DEFAULT_DT)))
    return ["network.nir"]
