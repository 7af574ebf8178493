"""snnTorch's neurons (snntorch 1.0) for the torch module frontend (snnc.frontends.torch_module),
as `init_hidden=True` modules in an nn.Sequential (each returns its spikes).

Per step, as snnTorch computes them (reset_delay, its default: the reset comes from the spike of
the step before, S_{t-1} = mem_{t-1} > threshold):
    Leaky:     mem_t = beta mem_{t-1} + x_t - S_{t-1} threshold          (reset 'subtract')
               mem_t = beta (1 - S_{t-1}) mem_{t-1} + x_t                (reset 'zero')
    Synaptic:  syn_t = alpha syn_{t-1} + x_t,  mem_t = beta mem_{t-1} + syn_t - S_{t-1} threshold
and S_t = mem_t > threshold. In snnc's float rule (docs/interop.md, the snntorch profile): v_decay
= 1 - beta, u_decay = 1 - alpha, fire at the next float above the threshold (`>` as `>=`), a late
subtraction being a soft reset of threshold / beta, which the next decay brings back to threshold
(refused for beta = 0), reset 'zero' a hard reset. Synaptic's 'zero' (it zeroes mem whatever the
current brings) and reset_delay=False, inhibition, graded spikes and state quantization are refused.
"""
from __future__ import annotations

import numpy as np
import torch

from snnc.frontends.torch_module import Builder, converter, neuron
from snnc.ir import Neuron

PREFIX = "snntorch._neurons."


def _one(builder: Builder, value, what: str) -> float:
    values = np.unique(np.asarray(torch.as_tensor(value).detach().double().clamp(0, 1)))
    if values.size != 1:
        raise builder.refuse(f"a {what} per neuron (an snnc layer has one decay)")
    return float(values[0])


def _population(builder: Builder, module, source: str, alpha: float | None) -> str:
    if not module.init_hidden or module.output:
        raise builder.refuse("a neuron without init_hidden=True, or with output=True (snnc reads modules that "
                             "return their spikes)")
    if not module.reset_delay or module.inhibition or module.state_quant \
            or float(torch.as_tensor(getattr(module, "graded_spikes_factor", 1.0))) != 1.0:
        raise builder.refuse("reset_delay=False, inhibition, state_quant or graded spikes")
    mechanism = module.reset_mechanism
    beta = _one(builder, module.beta, "beta")
    if mechanism == "zero" and alpha is not None:
        raise builder.refuse("Synaptic with reset_mechanism 'zero' (it zeroes mem whatever the current brings)")
    if mechanism == "subtract" and beta == 0.0:
        raise builder.refuse("reset_mechanism 'subtract' with beta = 0 (the late subtraction needs a membrane "
                             "that keeps something)")
    shape = builder.open_synapse(source, "neuron").shape
    threshold = np.broadcast_to(np.asarray(torch.as_tensor(module.threshold).detach().double()), shape).copy()
    reset = {"subtract": "soft", "zero": "hard", "none": "none"}[mechanism]
    made = Neuron(kind="spiking", threshold=np.nextafter(threshold, np.inf), reset=reset,
                  reset_amount=threshold / beta if reset == "soft" else None, bias=np.zeros(shape),
                  initial_state=np.zeros(shape), v_decay=1.0 - beta,
                  u_decay=1.0 if alpha is None else 1.0 - alpha)
    return neuron(builder, source, made)


@converter(PREFIX + "leaky.Leaky")
def leaky(builder: Builder, module, source: str) -> str:
    return _population(builder, module, source, None)


@converter(PREFIX + "synaptic.Synaptic")
def synaptic(builder: Builder, module, source: str) -> str:
    return _population(builder, module, source, _one(builder, module.alpha, "alpha"))
