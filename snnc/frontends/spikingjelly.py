"""SpikingJelly's `activation_based` modules (spikingjelly 0.0.0.0.14) for the torch module
frontend (snnc.frontends.torch_module): its neurons, and its layer wrappers, which are torch.nn
subclasses with a step mode (converted as their torch.nn class: single- and multi-step compute the
same per step), SeqToANNContainer and tdBN.

Neurons, per step, as SpikingJelly computes them (v_reset 0 or None, heaviside firing v >= v_threshold):
    IFNode:             v = v + x
    LIFNode:            v = v + (x - v) / tau  (decay_input)   |  v = v - v / tau + x
    ParametricLIFNode:  the same with 1 / tau = sigmoid(w), w its learned parameter
then a hard reset to 0 (v_reset = 0) or a soft reset v = v - v_threshold (v_reset = None). In snnc's
float rule: v_decay = 1 / tau, input_gain = 1 / tau with decay_input, threshold and reset amount
v_threshold. A v_reset other than 0 or None is refused. The membrane's starting value is read as
SpikingJelly sets it before the first step (`reset()`, then `v_float_to_tensor`), so a subclass that
starts it from a learned initial membrane potential (IMP) there is read with its IMP.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from snnc.frontends import torch_module
from snnc.frontends.torch_module import Builder, converter, neuron
from snnc.ir import Neuron

PREFIX = "spikingjelly.activation_based."

# its layers: torch.nn's modules with a step mode (tdBN is a batch norm whose weight starts at
# alpha x v_th, a plain batch norm at inference)
for _name, _convert in (("Conv2d", torch_module.conv2d), ("Linear", torch_module.linear),
                        ("BatchNorm2d", torch_module.batch_norm), ("BatchNorm1d", torch_module.batch_norm),
                        ("ThresholdDependentBatchNorm2d", torch_module.batch_norm),
                        ("ThresholdDependentBatchNorm1d", torch_module.batch_norm),
                        ("AvgPool2d", torch_module.avg_pool), ("MaxPool2d", torch_module.max_pool),
                        ("AdaptiveAvgPool2d", torch_module.adaptive_avg_pool),
                        ("Flatten", torch_module.flatten)):
    converter(f"{PREFIX}layer.{_name}")(_convert)


def _initial_potential(builder: Builder, module, shape: tuple) -> np.ndarray:
    """v before the first step, as the module itself sets it (on a copy: the user's module keeps its
    state): 0, or a learned IMP that a subclass's `v_float_to_tensor` or `reset` puts there."""
    probe = copy.deepcopy(module)
    probe.reset()
    probe.v_float_to_tensor(torch.zeros((1,) + tuple(shape), dtype=torch.float64))
    start = torch.as_tensor(probe.v).detach().double().numpy()
    try:
        return np.broadcast_to(start, (1,) + tuple(shape))[0].copy()
    except ValueError:
        raise builder.refuse(f"an initial membrane potential of shape {list(start.shape)} for neurons of shape "
                             f"{list(shape)}") from None


def _population(builder: Builder, module, source: str, decay: float, decay_input: bool) -> str:
    if module.v_reset is not None and float(module.v_reset) != 0.0:
        raise builder.refuse(f"v_reset = {module.v_reset} (snnc resets to 0, or subtracts the threshold "
                             f"with v_reset = None)")
    shape = builder.open_synapse(source, "neuron").shape
    threshold = np.full(shape, float(module.v_threshold))
    soft = module.v_reset is None
    made = Neuron(kind="spiking", threshold=threshold, reset="soft" if soft else "hard",
                  reset_amount=threshold.copy() if soft else None, bias=np.zeros(shape),
                  initial_state=_initial_potential(builder, module, shape), v_decay=decay, u_decay=1.0,
                  input_gain=decay if decay_input else 1.0)
    return neuron(builder, source, made)


@converter(PREFIX + "neuron.IFNode")
def if_node(builder: Builder, module, source: str) -> str:
    return _population(builder, module, source, 0.0, False)


@converter(PREFIX + "neuron.LIFNode")
def lif_node(builder: Builder, module, source: str) -> str:
    return _population(builder, module, source, 1.0 / float(module.tau), bool(module.decay_input))


@converter(PREFIX + "neuron.ParametricLIFNode")
def parametric_lif_node(builder: Builder, module, source: str) -> str:
    rate = float(torch.sigmoid(module.w.detach().double()))   # its learned 1 / tau
    return _population(builder, module, source, rate, bool(module.decay_input))


@converter(PREFIX + "layer.SeqToANNContainer")
def seq_to_ann(builder: Builder, module, source: str) -> str:
    """Its modules in order, each applied at every step."""
    where = builder.where
    for index, child in enumerate(module):
        builder.where = f"{where}.{index}"
        source = builder.convert(child, source)
    builder.where = where
    return source


@converter(PREFIX + "layer.Dropout", PREFIX + "layer.Dropout2d")
def dropout(builder: Builder, module, source: str) -> str:
    return source
