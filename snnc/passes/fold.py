"""Folding passes: turn the trained float network into one that only adds, compares and resets.

After `fold_all` no node has a batch norm, an MPR flag, an input gain or an op bias: tdBN, MPR,
decay_input and synapse biases live in the per-neuron threshold, bias, reset amount and initial
state (IMP already is the initial state), which is all a Loihi-style neuron offers. Recurrent
weights enter the current after the batch norm: they take the input gain and the membrane's
rescaling by |a|, not the batch norm itself.
"""
from __future__ import annotations

import numpy as np

from snnc.ir import SYNAPTIC_OPS, Network, Node

TINY_SCALE = 1e-12  # a batch-norm scale this small makes the channel constant


def mpr_inverse(v: np.ndarray) -> np.ndarray:
    """phi^-1 for InfLoR's MPR (docs/semantics.md, section 1): phi(H) >= Vth <=> H >= phi^-1(Vth)."""
    v = np.asarray(v, dtype=np.float64)
    below = 1.0 - (1.0 - np.minimum(v, 0.0)) ** 3
    middle = 0.5 + np.arctanh((np.clip(v, 0.0, 1.0) - 0.5) * 2.0 * np.tanh(1.5)) / 3.0
    above = np.maximum(v, 1.0) ** 3
    return np.where(v < 0, below, np.where(v > 1, above, middle))


def _per_channel(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a per-channel vector over a per-sample shape (C,) or (C, H, W)."""
    return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * (len(shape) - 1))


def synaptic_inputs(net: Network, node: Node) -> list[Node]:
    """The synaptic nodes whose currents a node sums: itself, or an add node's inputs."""
    if node.op in SYNAPTIC_OPS:
        return [node]
    if node.op == "add":
        inputs = [net.node(name) for name in node.inputs]
        if all(i.op in SYNAPTIC_OPS and i.neuron is None for i in inputs):
            return inputs
    raise ValueError(f"node '{node.name}': a neuron must follow a conv2d, linear or add of synapses")


def _scale_synapses(synapses: list[Node], scale: np.ndarray, shift: np.ndarray | None = None) -> None:
    """z -> scale * z + shift on every synapse group (per output channel), in place."""
    for syn in synapses:
        syn.weight = syn.weight * scale.reshape((-1,) + (1,) * (syn.weight.ndim - 1))
        bias = np.zeros(syn.weight.shape[0]) if syn.bias is None else syn.bias
        syn.bias = bias * scale
    if shift is not None:
        synapses[0].bias = synapses[0].bias + shift


def _scale_recurrent(node: Node, scale: np.ndarray) -> None:
    """recurrent -> scale * recurrent per output channel (its rows, C-order), in place."""
    if node.recurrent is not None:
        rows = node.recurrent.reshape(node.shape[0], -1, node.recurrent.shape[1])
        node.recurrent = (rows * np.asarray(scale, np.float64).reshape(-1, 1, 1)).reshape(node.recurrent.shape)


def fold_mpr(net: Network) -> Network:
    """MPR is strictly increasing, so phi(H) >= Vth <=> H >= phi^-1(Vth): fold it into the threshold."""
    out = net.copy()
    for node in out.nodes:
        if node.neuron is not None and node.neuron.mpr:
            node.neuron.threshold = mpr_inverse(node.neuron.threshold)
            node.neuron.mpr = False
    return out


def fold_decay_input(net: Network) -> Network:
    """LIF with decay_input multiplies its input by 1/tau: fold the gain into the synapses."""
    out = net.copy()
    for node in out.nodes:
        n = node.neuron
        if n is None or n.input_gain == 1.0:
            continue
        channels = node.shape[0]
        gain = np.full(channels, n.input_gain)
        if node.bn is not None:
            node.bn.scale, node.bn.shift = node.bn.scale * gain, node.bn.shift * gain
        else:
            _scale_synapses(synaptic_inputs(out, node), gain)
        _scale_recurrent(node, gain)
        n.input_gain = 1.0
    return out


def fold_bn(net: Network, into: str = "neuron") -> Network:
    """Fold each inference batch norm z -> a*z + b.

    into="neuron": divide the neuron's state by |a| (threshold, bias, reset amount and initial state
    over |a|; a < 0 flips the sign of that channel's weights), so weights keep their trained values
    and a per-channel threshold absorbs the scale. into="weights": W <- a*W, bias <- a*bias + b.
    A batch norm on a synapse feeding an add node, or on a node without neuron, always folds into
    weights. Requires fold_decay_input first (the gain multiplies after the batch norm).
    """
    if into not in ("neuron", "weights"):
        raise ValueError("into must be 'neuron' or 'weights'")
    out = net.copy()
    for node in out.nodes:
        if node.bn is None:
            continue
        if node.neuron is not None and node.neuron.input_gain != 1.0:
            raise ValueError(f"node '{node.name}': run fold_decay_input before fold_bn")
        scale, shift = np.asarray(node.bn.scale, np.float64), np.asarray(node.bn.shift, np.float64)
        node.bn = None
        synapses = synaptic_inputs(out, node)
        if into == "weights" or node.neuron is None or node.neuron.kind != "spiking":
            _scale_synapses(synapses, scale, shift)
            continue
        constant = np.abs(scale) < TINY_SCALE
        magnitude = np.where(constant, 1.0, np.abs(scale))
        sign = np.where(constant, 0.0, np.sign(scale))
        _scale_synapses(synapses, sign, np.where(constant, shift, shift / magnitude))
        _scale_recurrent(node, 1.0 / magnitude)
        n, per = node.neuron, _per_channel(magnitude, node.shape)
        n.threshold = n.threshold / per
        n.bias = n.bias / per
        n.initial_state = n.initial_state / per
        if n.reset_amount is not None:
            n.reset_amount = n.reset_amount / per
    return out


def fold_synapse_bias(net: Network) -> Network:
    """Move op biases into the neuron's bias current (a Loihi synapse carries no bias)."""
    out = net.copy()
    for node in out.nodes:
        if node.neuron is None:
            continue
        for syn in synaptic_inputs(out, node):
            if syn.bias is not None:
                node.neuron.bias = node.neuron.bias + _per_channel(syn.bias, node.shape)
                syn.bias = None
    return out


def fold_all(net: Network, bn_into: str = "neuron") -> Network:
    """Every folding pass in the order their preconditions need."""
    return fold_synapse_bias(fold_bn(fold_decay_input(fold_mpr(net)), into=bn_into))
