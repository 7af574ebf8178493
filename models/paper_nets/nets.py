"""The source papers' two networks at a small width for 1 x 28 x 28 digits, written as SpikingJelly
users write them (its multi-step layers and neurons; snnc.nn's neuron where SpikingJelly has no MPR).

- `sew_resnet_imp`: a SEW-ResNet (Fang et al. 2021) of IF neurons whose membranes start at a learned
  initial membrane potential (IMP), trained on its last time step (LTS): read it with `--readout last`.
- `srif_mpr`: soft-reset IF neurons (SRIF) with the membrane potential rectifier (MPR) and tdBN
  (InfLoR), trained with label-smoothed TET (TET-S): read it with the default mean readout.

Both take [T, B, 1, 28, 28] and return the last layer's output at each step, [T, B, 10].
"""
import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

from snnc import nn as snnc_nn


class IMPIFNode(neuron.IFNode):
    """SpikingJelly's IF neuron whose membrane starts each sample at a learned potential, one per
    neuron (the IMP paper's learnable initial membrane potential), instead of 0."""

    def __init__(self, shape, **kwargs):
        super().__init__(surrogate_function=surrogate.ATan(), step_mode="m", **kwargs)
        self.imp = nn.Parameter(torch.zeros(shape))

    def v_float_to_tensor(self, x):
        if isinstance(self.v, float):   # the first step after reset()
            self.v = self.imp.expand_as(x)


def _conv_bn_if(cin, cout, kernel, stride, size):
    return [layer.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False, step_mode="m"),
            layer.BatchNorm2d(cout, step_mode="m"), IMPIFNode((cout, size, size))]


class SEWBlock(nn.Module):
    """SEW-ResNet's basic block with its ADD connection: the spikes of two conv-BN-IF stages plus
    those of the shortcut (the input itself, or conv 1x1 - BN - IF where the block downsamples)."""

    def __init__(self, cin, cout, stride, size):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_if(cin, cout, 3, stride, size), *_conv_bn_if(cout, cout, 3, 1, size))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else \
            nn.Sequential(*_conv_bn_if(cin, cout, 1, stride, size))

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


def sew_resnet_imp(channels=(8, 16, 32)):
    """Stem conv 3x3 - BN - IF, then a SEW block per width (the later ones with stride 2), flatten,
    linear readout. No global average pool at this width: measured on 2000 digits, pooling the
    7 x 7 map away held the network near 50 % where the flattened map reaches 80 % or more."""
    size = 28
    blocks = [*_conv_bn_if(1, channels[0], 3, 1, size)]
    cin = channels[0]
    for index, cout in enumerate(channels):
        stride = 1 if index == 0 else 2
        size = (size - 1) // stride + 1
        blocks.append(SEWBlock(cin, cout, stride, size))
        cin = cout
    blocks += [layer.Flatten(step_mode="m"), layer.Linear(cin * size * size, 10, step_mode="m")]
    return nn.Sequential(*blocks)


def _srif_mpr():
    return snnc_nn.SpikingNeuron(kind="if", vth=0.5, reset="soft", reset_amount=1.0, mpr=True)


def srif_mpr(channels=(16, 32), hidden=64):
    """conv 3x3 - tdBN - SRIF+MPR, avg pool 2, twice; then linear - tdBN - SRIF+MPR, linear readout."""
    first, second = channels
    return nn.Sequential(
        layer.Conv2d(1, first, 3, padding=1, bias=False, step_mode="m"), snnc_nn.TdBN(first, vth=0.5), _srif_mpr(),
        layer.AvgPool2d(2, step_mode="m"),
        layer.Conv2d(first, second, 3, padding=1, bias=False, step_mode="m"), snnc_nn.TdBN(second, vth=0.5),
        _srif_mpr(), layer.AvgPool2d(2, step_mode="m"), layer.Flatten(step_mode="m"),
        layer.Linear(second * 7 * 7, hidden, bias=False, step_mode="m"), snnc_nn.TdBN(hidden, vth=0.5, kind="1d"),
        _srif_mpr(), layer.Linear(hidden, 10, step_mode="m"))


FACTORIES = {"sew_resnet_imp": sew_resnet_imp, "srif_mpr": srif_mpr}
