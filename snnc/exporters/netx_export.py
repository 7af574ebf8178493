"""Export a fixed-point snnc Network as a lava-dl netx HDF5 file (docs/interop.md, "snnc -> netx").

netx runs each layer as Lava's CUBA `LIF` (hard reset to 0, spike when v > vThMant << 6, one
threshold per layer, bias_mant << 6, no initial state) or as a sigma-delta neuron (SDNN: the input
layer's Delta encoder, ReLU SigmaDelta layers, a Sigma readout) behind a Dense or Conv synapse, in a
chain input -> (conv | dense | flatten)*. A network whose neurons or graph need more than that is refused
with a DesignRuleError naming the layer and the feature. The layout follows lava-dl slayer's
`export_hdf5` (the files `lava.lib.dl.netx.hdf5.Network` reads); snnc adds only HDF5 attributes
(netx ignores them): `snnc_name` per layer and a root group `snnc` with the network's name, readout
and input encoding, so that snnc.frontends.netx.load_netx reads the same network back.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from snnc import __version__
from snnc.errors import DesignRuleError, InputError
from snnc.export_dir import artifact_writer, write_bytes
from snnc.frontends.netx import (BIAS_EXP, DECAY_UNITY, LAVA_LIF_RULES, LAVA_MAX_DELAY, SDNN_SCALE_SHIFT,
                                 SDNN_STATE_EXP, THRESHOLD_SHIFT, lava_dense_weights)
from snnc.ir import Network, Node, conv_dilation, conv_groups

BIAS_MANT_LIMIT = 1 << 12         # Lava's LIF bias_mant is 13-bit signed
CONV_WEIGHT_RANGE = (-256, 255)   # 8-bit magnitude and sign, as Lava's Dense clips


def _fail(node: Node, feature: str) -> DesignRuleError:
    return DesignRuleError(f"layer '{node.name}': {feature} cannot be expressed in lava-dl netx")


def _strict_threshold(net: Network, node: Node) -> int:
    """The one register S with Lava's rule v > S (S = vThMant << 6) equal to the node's rule."""
    thresholds = np.unique(np.asarray(node.neuron.threshold, dtype=np.int64))
    if thresholds.size != 1:
        raise _fail(node, f"per-neuron thresholds ({thresholds.size} values; netx has one vThMant per layer)")
    register = int(thresholds[0]) - (0 if net.arithmetic["fire_rule"] == ">" else 1)
    if register < 0 or register % (1 << THRESHOLD_SHIFT) or register >> THRESHOLD_SHIFT >= 1 << 17:
        raise _fail(node, f"threshold {int(thresholds[0])} with rule '{net.arithmetic['fire_rule']}' "
                          f"(netx fires on v > vThMant << 6 with a 17-bit vThMant)")
    return register >> THRESHOLD_SHIFT


def _bias_mantissa(node: Node, per_channel: bool) -> np.ndarray | None:
    bias = np.asarray(node.neuron.bias, dtype=np.int64)
    if not np.any(bias):
        return None
    if np.any(bias % (1 << BIAS_EXP)):
        raise _fail(node, "a bias that is not a multiple of 64 (netx uses bias_exp = 6)")
    mant = bias >> BIAS_EXP
    if np.any(mant < -BIAS_MANT_LIMIT) or np.any(mant >= BIAS_MANT_LIMIT):
        raise _fail(node, f"bias mantissa {int(np.abs(mant).max())} beyond 13 bits")
    if per_channel:
        flat = mant.reshape(mant.shape[0], -1)
        if not np.all(flat == flat[:, :1]):
            raise _fail(node, "a bias that varies inside a channel (netx conv biases are per channel)")
        return flat[:, 0]
    return mant.reshape(-1)


def _layer_bias(node: Node, per_channel: bool) -> np.ndarray | None:
    """The layer's netx bias: a CUBA bias mantissa, or a sigma-delta bias >> (spike_exp + state_exp)."""
    if node.neuron.kind != "sigma_delta":
        return _bias_mantissa(node, per_channel)
    if not np.any(node.neuron.bias):
        return None
    if per_channel:
        return _sdnn_register(node, node.neuron.bias, "bias", per_channel=True)
    return _sdnn_register(node, node.neuron.bias.reshape(-1, 1), "bias", per_channel=True)


def _decays(node: Node) -> tuple[int, int]:
    n = node.neuron
    i_decay, v_decay = int(n.u_decay) + 1, int(n.v_decay)
    if not (0 <= i_decay <= DECAY_UNITY and 0 <= v_decay <= DECAY_UNITY):
        raise _fail(node, f"decays du={int(n.u_decay)}, dv={v_decay}")
    return i_decay, v_decay


def _sdnn_register(node: Node, values, what: str, per_channel: bool = False) -> np.ndarray:
    """A sigma-delta threshold or bias as netx stores it: the register >> (spike_exp + state_exp)."""
    values = np.asarray(values, dtype=np.int64)
    if np.any(values % (1 << SDNN_SCALE_SHIFT)):
        raise _fail(node, f"a sigma-delta {what} that is not a multiple of 2^{SDNN_SCALE_SHIFT}")
    mant = values >> SDNN_SCALE_SHIFT
    flat = mant.reshape(mant.shape[0], -1) if per_channel else mant.reshape(1, -1)
    if not np.all(flat == flat[:, :1]):
        raise _fail(node, f"a sigma-delta {what} that varies {'inside a channel' if per_channel else 'per neuron'}")
    return flat[:, 0]


def _write_sigma_delta_neuron(group, node: Node, encoder: bool) -> None:
    """netx's SDNN neuron: the Delta encoder of the input layer, else a ReLU SigmaDelta."""
    n = node.neuron
    expected = ("identity", False, SDNN_SCALE_SHIFT) if encoder else ("relu", True, 0)
    if (n.activation, n.accumulate, n.input_shift) != expected or n.message_shift != SDNN_STATE_EXP \
            or np.any(np.asarray(n.initial_state) != 0) or (encoder and np.any(n.bias)):
        raise _fail(node, "a sigma-delta population other than netx's (Delta encoder, or ReLU SigmaDelta "
                          f"with spike_exp = state_exp = {SDNN_STATE_EXP})")
    neuron = group.create_group("neuron")
    neuron.create_dataset("type", data="SDNN")
    neuron.create_dataset("activation", data="relu")
    neuron.create_dataset("vThMant", data=np.int64(_sdnn_register(node, n.threshold, "threshold")[0]))


def _write_neuron(group, net: Network, node: Node) -> None:
    n = node.neuron
    if n.kind == "sigma_delta":
        _write_sigma_delta_neuron(group, node, encoder=False)
        return
    if n.reset != "hard":
        raise _fail(node, f"{n.reset} reset (Lava's LIF resets v to 0)")
    if np.any(np.asarray(n.initial_state) != 0):
        raise _fail(node, "a non-zero initial state (IMP)")
    vth = _strict_threshold(net, node)
    i_decay, v_decay = _decays(node)
    neuron = group.create_group("neuron")
    neuron.create_dataset("type", data="CUBA")
    neuron.create_dataset("iDecay", data=np.int64(i_decay))
    neuron.create_dataset("vDecay", data=np.int64(v_decay))
    neuron.create_dataset("vThMant", data=np.int64(vth))
    neuron.create_dataset("refDelay", data=np.int64(1))
    neuron.create_dataset("gradedSpike", data=np.bool_(False))


def _check_readout_below_threshold(net: Network, node: Node) -> None:
    """A readout integrator becomes a CUBA neuron with the largest threshold; exact as long as its
    membrane can never pass that threshold (snnc's static bound analysis says so)."""
    from snnc.passes import bound_analysis

    limit = ((1 << 17) - 1) << THRESHOLD_SHIFT
    bound = {entry["layer"]: entry for entry in bound_analysis(net)}[node.name]["max_abs_voltage"]
    if bound >= limit:
        raise _fail(node, f"a readout integrator whose membrane may reach {bound} (netx would fire at {limit})")


def _is_sigma_readout(node: Node) -> bool:
    """Lava's Sigma (a sigma_output layer): an integrator taking its input unshifted, no bias."""
    n = node.neuron
    return (n.input_shift == 0 and int(n.u_decay) == DECAY_UNITY - 1 and int(n.v_decay) == 0
            and not np.any(n.bias) and not np.any(n.initial_state))


def _write_readout_neuron(group, node: Node) -> None:
    """The readout integrator as a CUBA neuron that cannot fire (vThMant at its 17-bit maximum),
    marked with the attribute snnc_integrator so that load_netx reads it back as the readout."""
    if np.any(np.asarray(node.neuron.initial_state) != 0):
        raise _fail(node, "a non-zero initial state (IMP)")
    i_decay, v_decay = _decays(node)
    group.attrs["snnc_integrator"] = True
    neuron = group.create_group("neuron")
    neuron.create_dataset("type", data="CUBA")
    neuron.create_dataset("iDecay", data=np.int64(i_decay))
    neuron.create_dataset("vDecay", data=np.int64(v_decay))
    neuron.create_dataset("vThMant", data=np.int64((1 << 17) - 1))
    neuron.create_dataset("refDelay", data=np.int64(1))
    neuron.create_dataset("gradedSpike", data=np.bool_(False))


def _is_identity_synapse(node: Node) -> bool:
    """A conv2d (1x1, stride 1, no padding) or linear whose weights are the identity."""
    weight = np.asarray(node.weight)
    size = weight.shape[0]
    if node.op == "conv2d" and (list(node.attrs["stride"]) != [1, 1] or list(node.attrs["padding"]) != [0, 0]
                                or list(node.attrs["kernel"]) != [1, 1]):
        return False
    return weight.size == size * size and np.array_equal(weight.reshape(size, size), np.eye(size))


def _is_spike_driven_input(net: Network, node: Node | None) -> bool:
    """netx's input neurons driven by input spikes (load_netx's --netx-input spikes): a CUBA
    spiking layer without bias behind an identity synapse on the spike-encoded input."""
    return (node is not None and net.encoding.get("kind") == "spikes" and node.op in ("linear", "conv2d")
            and node.inputs == [net.input_node.name] and node.spiking and node.neuron.kind == "spiking"
            and not node.delayed and node.recurrent is None and not np.any(node.neuron.bias)
            and _is_identity_synapse(node))


def _is_delta_encoder(node: Node | None) -> bool:
    return node is not None and node.neuron is not None and node.neuron.kind == "sigma_delta" \
        and not node.neuron.accumulate


def _input_neurons(net: Network, nodes: list[Node]) -> Node | None:
    """The node load_netx makes of a netx input layer with neurons (an identity synapse into
    neurons): bias-driven ones (the image arriving through the encoding's pixel_transform) or a
    sigma-delta network's Delta encoder; else None."""
    node = nodes[1] if len(nodes) > 1 else None
    if "pixel_transform" not in net.encoding and not _is_delta_encoder(node) and not _is_spike_driven_input(net, node):
        return None
    if node is None or node.neuron is None or node.inputs != [nodes[0].name] or node.op not in ("linear", "conv2d"):
        raise DesignRuleError(f"network '{net.name}': a pixel_transform encoding needs netx's input neurons "
                              f"(an identity layer with neurons right after the input)")
    if not _is_identity_synapse(node):
        raise _fail(node, "input neurons behind a synapse that is not the identity (1x1, stride 1, no padding)")
    if np.any(np.asarray(node.neuron.bias) != 0):
        raise _fail(node, "input neurons with a bias of their own (netx's input bias is the image)")
    return node


def _synapse_latency(nodes: list[Node], unlagged: list[Node]) -> int:
    """1 where every synaptic layer takes its input at least one step late, as lava-dl's netx
    network runs in Lava (each Dense/Conv adds a step: load_netx's free-running timing), so that the
    file holds only the delays beyond that step and is marked `snnc/latency = 1`; else 0. Input
    neurons and a readout netx does not hold (`unlagged`) take no step."""
    synaptic = [node for node in nodes[1:] if node.op in ("linear", "conv2d") and node not in unlagged]
    one_step = [node.delay is not None and int(np.min(node.delay)) >= 1 for node in synaptic]
    return int(bool(synaptic) and all(one_step))


def _layer_delays(net: Network, written: list[Node], unlagged: list[Node], latency: int) -> dict[str, np.ndarray]:
    """netx `delay` datasets (layer name -> array) holding every delay beyond the synapse latency,
    as load_netx reads them back: on the source S of the delayed input, one per neuron of S (netx
    delays S's input synapses, which for a spiking dense layer without bias or recurrence delays its
    spikes alike), or else on the delayed dense layer itself, one per input (a [out, in] matrix
    where out = in, since netx reads a vector of out delays as per neuron)."""
    names = {node.name for node in written}
    per_source: dict[str, list[tuple[Node, np.ndarray]]] = {}
    for node in net.nodes[1:]:
        if node.delay is None:
            continue
        extra = np.asarray(node.delay, dtype=np.int64) - (0 if node in unlagged else latency)
        if np.any(extra < 0) or np.any(extra > LAVA_MAX_DELAY):
            raise _fail(node, f"axonal delays of {int(extra.min())}..{int(extra.max())} steps beyond the "
                              f"{latency}-step synapse latency (netx holds 0..{LAVA_MAX_DELAY})")
        if np.any(extra):
            per_source.setdefault(node.inputs[0], []).append((node, extra.reshape(-1)))
    delays: dict[str, np.ndarray] = {}
    for source, readers in per_source.items():
        producer = net.node(source)
        alike = all(np.array_equal(extra, readers[0][1]) for _, extra in readers) \
            and len(readers) == len(net.consumers(source))
        if (alike and source in names and producer.op == "linear" and producer.spiking
                and producer.neuron.kind == "spiking" and not np.any(producer.neuron.bias)
                and producer.recurrent is None):
            delays[source] = readers[0][1]
            continue
        for node, extra in readers:
            if node.name not in names or node.op != "linear" or node.name in delays:
                raise _fail(node, "axonal delays that netx holds neither on its source's neurons (a spiking "
                                  "dense layer without bias) nor on its own dense inputs")
            out, size = int(np.prod(node.shape)), extra.size
            delays[node.name] = np.broadcast_to(extra, (out, size)).copy() if out == size else extra
    return delays


def _type(group, name: str) -> None:
    group.create_dataset("type", (1,), "S10", [name.encode("ascii")])


def _is_count_readout(net: Network, node: Node) -> bool:
    """The identity readout snnc appends to a spiking output (load_netx, load_nir): netx needs none."""
    n = node.neuron
    source = net.node(node.inputs[0])
    size = node.shape[0]
    return (source.spiking and node.weight.shape == (size, size)
            and np.array_equal(node.weight, np.eye(size, dtype=np.int64)) and not np.any(n.bias)
            and not np.any(n.initial_state) and int(n.u_decay) == DECAY_UNITY - 1 and int(n.v_decay) == 0)


def _average_classes(net: Network, node: Node) -> int:
    """The classes of slayer's Average readout as load_netx holds it (class c counts the c-th of
    equal, consecutive groups of the spiking source's neurons), or 0 for any other readout."""
    n, source = node.neuron, net.node(node.inputs[0])
    classes, size = int(node.shape[0]), int(np.prod(source.shape))
    if node.op != "linear" or not source.spiking or size % classes or classes == size:
        return 0
    grouped = np.kron(np.eye(classes, dtype=np.int64), np.ones((1, size // classes), dtype=np.int64))
    plain = (not np.any(n.bias) and not np.any(n.initial_state) and int(n.u_decay) == DECAY_UNITY - 1
             and int(n.v_decay) == 0 and n.input_shift is None)
    return classes if plain and np.array_equal(node.weight, grouped) else 0


def _readout_is_default_integrator(node: Node) -> bool:
    """netx's neuron for a dense layer without `neuron` (iDecay 0, vDecay 4096: v = the accumulated u)
    gives the same v[t] = sum of a << 6 as snnc's IF readout (du = 4095, dv = 0) without bias."""
    n = node.neuron
    du, dv = int(n.u_decay), int(n.v_decay)
    if (du, dv) == (-1, DECAY_UNITY):
        return True
    return (du, dv) == (DECAY_UNITY - 1, 0) and not np.any(n.bias)


def _check_weights(node: Node) -> np.ndarray:
    weight = np.asarray(node.weight, dtype=np.int64)
    if node.op == "linear":   # netx scales a dense_rec layer's weight and weight_rec together
        together = weight if node.recurrent is None else np.hstack([weight, np.asarray(node.recurrent, np.int64)])
        effective, _, exponent = lava_dense_weights(together)
        if effective is None or not np.array_equal(effective, together):
            raise _fail(node, f"weights in [{together.min()}, {together.max()}] (Lava's Dense keeps 8-bit "
                              f"mantissas; exponent {exponent})")
    elif weight.min(initial=0) < CONV_WEIGHT_RANGE[0] or weight.max(initial=0) > CONV_WEIGHT_RANGE[1]:
        raise _fail(node, f"conv weights in [{weight.min()}, {weight.max()}] beyond 8 bits and sign")
    return weight


def export_netx(net: Network, path) -> list[str]:
    """Write `net` (fixed point) as a netx HDF5 file; returns one line per layer written."""
    import h5py

    if not net.fixed:
        raise InputError(f"network '{net.name}' is not fixed-point: netx files hold integers "
                         f"(quantize it first, e.g. for targets/loihi1.yaml)")
    for key, value in LAVA_LIF_RULES.items():
        if key in net.arithmetic and net.arithmetic[key] != value:
            raise DesignRuleError(f"network '{net.name}': netx needs {key} = {value!r} (Lava's CUBA neuron), "
                                  f"the network has {net.arithmetic[key]!r}")
    nodes = list(net.nodes)
    readout = nodes[-1]
    input_neurons = _input_neurons(net, nodes)
    layers: list[tuple[str, Node]] = [("input", nodes[0])]
    if readout.neuron.input_shift is not None:
        if not _is_sigma_readout(readout):
            raise _fail(readout, f"a readout taking its input << {readout.neuron.input_shift} (netx's Sigma takes "
                                 f"it unshifted, its integrators << 6)")
        body, readout_kind = nodes[1:], "sigma"
    elif _is_count_readout(net, readout):
        body, readout_kind = nodes[1:-1], "count"
    elif _average_classes(net, readout):
        body, readout_kind = nodes[1:-1], "average"
    elif _readout_is_default_integrator(readout):
        body, readout_kind = nodes[1:], "default"
    else:
        body, readout_kind = nodes[1:], "cuba"
    if input_neurons is not None:
        body.remove(input_neurons)
    previous = input_neurons or nodes[0]
    unlagged = [input_neurons] + ([readout] if readout_kind in ("count", "average") else [])
    latency = _synapse_latency(nodes, unlagged)
    for node in nodes[1:]:
        if node.recurrent is not None and (node.op != "linear" or node.neuron.kind != "spiking"):
            raise _fail(node, "recurrent synapses outside a spiking dense layer (netx's dense_rec)")
        if node.neuron is not None and node.neuron.max_spikes != 1:
            raise _fail(node, "several spikes per step (netx's graded spikes are not spike counts)")
    for node in body:
        if node.inputs != [previous.name]:
            raise _fail(node, f"input from {node.inputs} (netx layers form one chain)")
        if node.op == "flatten":
            layers.append(("flatten", node))
        elif node.op in ("linear", "conv2d") and node.neuron is not None:
            if node is not readout and not node.spiking:
                raise _fail(node, "a non-spiking layer before the readout")
            layers.append(("conv" if node.op == "conv2d" else "dense_rec" if node.recurrent is not None else "dense",
                           node))
        elif node.op in ("avgpool", "sumpool"):
            raise _fail(node, f"{node.op} (netx has no pooling layer)")
        elif node.op == "add":
            raise _fail(node, "an add (residual/skip connection)")
        else:
            raise _fail(node, f"a {node.op} without neurons")
        previous = node
    if readout_kind == "average":
        layers.append(("average", readout))
    if readout_kind == "cuba":
        _check_readout_below_threshold(net, readout)
    delays = _layer_delays(net, [node for _, node in layers], unlagged, latency)
    path = Path(path)
    summary = []
    # Built in memory, then written in one call: the HDF5 library crashes the process on a full
    # disk, while a plain write reports ENOSPC, and no half-written file is ever left behind.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        root = handle.create_group("layer")
        for index, (kind, node) in enumerate(layers):
            group = root.create_group(str(index))
            group.attrs["snnc_name"] = node.name
            _type(group, kind)
            if kind == "input":
                group.create_dataset("shape", data=np.array(node.shape, dtype=np.int64))
                if _is_delta_encoder(input_neurons):
                    _write_sigma_delta_neuron(group, input_neurons, encoder=True)
                elif input_neurons is not None:   # netx's Input block: bias_mant = transform of the image
                    _write_neuron(group, net, input_neurons)
                    for key, value in net.encoding.get("pixel_transform", {}).items():
                        group.create_dataset(key, data=np.array([value], dtype=np.float32))
            elif kind == "flatten":
                group.create_dataset("shape", data=np.array([int(np.prod(node.shape)), 1, 1], dtype=np.int64))
            elif kind == "average":
                group.create_dataset("shape", data=np.array(node.shape, dtype=np.int64))
            elif kind in ("dense", "dense_rec"):
                weight = _check_weights(node)
                if node.name in delays:
                    group.create_dataset("delay", data=delays[node.name].astype(np.float32))
                if node.recurrent is not None:
                    group.create_dataset("weight_rec", data=np.asarray(node.recurrent, dtype=np.float32))
                group.create_dataset("shape", data=np.array(node.shape, dtype=np.int64))
                group.create_dataset("inFeatures", data=np.int64(weight.shape[1]))
                group.create_dataset("outFeatures", data=np.int64(weight.shape[0]))
                group.create_dataset("weight", data=weight.astype(np.float32))
                if node is readout and readout_kind == "default":
                    pass   # netx's default neuron for a dense layer without one
                elif node is readout and readout_kind == "sigma":
                    group.create_dataset("neuron/type", data="SDNN")
                    group.create_dataset("neuron/sigma_output", data=np.bool_(True))
                elif node is readout:
                    _write_readout_neuron(group, node)
                else:
                    _write_neuron(group, net, node)
                bias = _layer_bias(node, per_channel=False)
                if bias is not None:
                    group.create_dataset("bias", data=bias.astype(np.float32))
            else:
                weight = _check_weights(node)
                group.create_dataset("shape", data=np.array(node.shape, dtype=np.int64))
                group.create_dataset("inChannels", data=np.int64(weight.shape[1] * conv_groups(node.attrs)))
                group.create_dataset("outChannels", data=np.int64(weight.shape[0]))
                group.create_dataset("kernelSize", data=np.array(weight.shape[2:], dtype=np.int64))
                group.create_dataset("stride", data=np.array(node.attrs["stride"], dtype=np.int64))
                group.create_dataset("padding", data=np.array(node.attrs["padding"], dtype=np.int64))
                group.create_dataset("dilation", data=np.array(conv_dilation(node.attrs), dtype=np.int64))
                group.create_dataset("groups", data=np.int64(conv_groups(node.attrs)))
                group.create_dataset("weight", data=weight.astype(np.float32))
                _write_neuron(group, net, node)
                bias = _layer_bias(node, per_channel=True)
                if bias is not None:
                    group.create_dataset("bias", data=bias.astype(np.float32))
            summary.append(f"layer {index}: {kind} {node.name} {list(node.shape)}")
        simulation = handle.create_group("simulation")
        simulation.create_dataset("Ts", data=np.int64(1))
        simulation.create_dataset("tSample", data=np.int64(net.T))
        meta = handle.create_group("snnc")
        meta.attrs["name"] = net.name
        meta.attrs["readout"] = net.readout
        meta.attrs["snnc_version"] = __version__
        meta.attrs["encoding"] = json.dumps(net.encoding, sort_keys=True)
        meta.attrs["latency"] = latency
        if input_neurons is not None and not _is_delta_encoder(input_neurons):
            meta.attrs["input_drive"] = "bias" if "pixel_transform" in net.encoding else "spikes"
        # netx.hdf5.Network(input_message_bits=...): graded input (pixels) needs the payload width
        graded = int(net.encoding.get("max", 1)) > 1
        meta.attrs["input_message_bits"] = int(net.encoding.get("bits", 8)) if graded else 0
        if readout_kind == "count":
            meta.attrs["count_readout"] = readout.name
    write_bytes(path, buffer.getvalue())
    return summary


@artifact_writer("netx network", order=40)
def write_artifact(compiled, directory, options: dict) -> list[str]:
    """Export writer: the fixed network as `network.net`. With options["netx"]
    true a network netx cannot express fails the export (DesignRuleError); by default ("auto") such
    a network simply gets no netx file."""
    request = options.get("netx", "auto")
    if not request:
        return []
    try:
        export_netx(compiled.fixed, Path(directory) / "network.net")
    except DesignRuleError:
        if request == "auto":
            return []
        raise
    return ["network.net"]
