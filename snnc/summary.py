"""Per-layer summaries of a network, for `snnc inspect` and reports."""
from __future__ import annotations

import math

import numpy as np

from snnc.ir import Network, Node, conv_dilation


def _valid_taps(size: int, kernel: int, stride: int, padding: int, out_size: int, dilation: int = 1) -> int:
    """Sum over output positions of the kernel taps that land inside the input, along one axis."""
    taps = (np.arange(out_size) * stride - padding)[:, None] + np.arange(kernel)[None, :] * dilation
    return int(np.count_nonzero((taps >= 0) & (taps < size)))


def synapse_count(net: Network, node: Node) -> int:
    """Connections of a conv2d/linear node, counting only taps inside the input (borders, padding),
    plus a population's recurrent synapses: its non-zero recurrent weights, as the mapper and the
    cycle simulator count them (docs/cycle-simulator.md)."""
    recurrent = 0 if node.recurrent is None else int(np.count_nonzero(node.recurrent))
    if node.op == "linear":
        return int(node.weight.size) + recurrent
    if node.op != "conv2d":
        return recurrent
    out_channels, in_channels, kh, kw = node.weight.shape
    _, height, width = net.node(node.inputs[0]).shape
    (sh, sw), (ph, pw) = node.attrs["stride"], node.attrs["padding"]
    dh, dw = conv_dilation(node.attrs)
    rows = _valid_taps(height, kh, sh, ph, node.shape[1], dh)
    cols = _valid_taps(width, kw, sw, pw, node.shape[2], dw)
    return out_channels * in_channels * rows * cols + recurrent


def _bits(values) -> int:
    """Two's-complement bits needed for the integers in `values` (sign bit included)."""
    values = np.asarray(values)
    if values.size == 0:
        return 0
    largest = int(max(values.max(), -values.min() - 1, 0))
    return largest.bit_length() + 1


def _range(values) -> str:
    if values is None:
        return "-"
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        return f"[{values.min()}, {values.max()}]"
    return f"[{values.min():.4g}, {values.max():.4g}]"


def _neuron_text(node: Node, fixed: bool) -> str:
    n = node.neuron
    if n is None:
        return "-"
    if n.kind == "integrator":
        return "integrator"
    if n.kind == "sigma_delta":
        return f"sigma-delta {n.activation}" if n.accumulate else "delta encoder"
    reset = "soft" if n.reset == "soft" else "hard"
    leak = (f"dv={n.v_decay}" if fixed else f"leak={n.v_decay:.3g}") if n.v_decay else "IF"
    extras = [reset, leak]
    if not fixed and n.mpr:
        extras.append("MPR")
    if np.any(np.asarray(n.initial_state) != 0):
        extras.append("init-state")
    return " ".join(extras)


def layer_rows(net: Network) -> list[dict]:
    """One row per node: what a person deploying the network wants to see at a glance."""
    rows = []
    for node in net.nodes:
        row = {"layer": node.name, "op": node.op, "inputs": ",".join(node.inputs) or "-",
               "shape": "x".join(str(d) for d in node.shape), "neuron": _neuron_text(node, net.fixed),
               "threshold": "-", "weights": _range(node.weight), "synapses": synapse_count(net, node),
               "weight_bits": "-", "threshold_bits": "-"}
        if node.spiking:
            row["threshold"] = _range(node.neuron.threshold)
        if net.fixed and node.weight is not None:
            row["weight_bits"] = _bits(node.weight)
        if net.fixed and node.recurrent is not None:
            row["weight_bits"] = max(_bits(node.recurrent), row["weight_bits"] if node.weight is not None else 0)
        if net.fixed and node.spiking:
            row["threshold_bits"] = _bits(node.neuron.threshold)
        if node.bn is not None:
            row["neuron"] += " +BN"
        if node.recurrent is not None:
            row["neuron"] += " +recurrent"
        if node.delayed:
            row["op"] += f" delay<={int(node.delay.max())}"
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain aligned columns."""
    if not rows:
        return ""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def describe_network(net: Network) -> str:
    kind = (f"fixed point for {net.metadata.get('target', '?')}" if net.fixed else "float")
    total = sum(synapse_count(net, node) for node in net.nodes)
    neurons = sum(math.prod(node.shape) for node in net.nodes if node.neuron is not None)
    return (f"network {net.name}: {kind}, T={net.T}, readout={net.readout}, "
            f"{neurons} neurons, {total} synapses\n" + format_table(layer_rows(net)))
