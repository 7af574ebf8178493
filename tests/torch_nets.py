"""Small SNNs built from SpikingJelly's own layers and neurons (spikingjelly 0.0.0.0.14,
activation_based) and from snnTorch's (1.0.0), with the library's own forward pass in float64: what
tests/test_torch_module.py holds snnc's torch module frontend to, spike for spike.

Weights are seeded and scaled so that every spiking layer fires at a few to some tens of percent
on real digits (`python tests/torch_nets.py` prints the rates).
"""
from __future__ import annotations

import numpy as np
import torch
from spikingjelly.activation_based import functional, layer, neuron

T = 8
DIGITS = 16


def digits() -> np.ndarray:
    from snnc.data import load_dataset

    return load_dataset("mnist5k").test_images[:DIGITS]


def _scaled(model: torch.nn.Module, seed: int, gain: float) -> torch.nn.Module:
    """Seeded weights times `gain`, batch norms with set (not default) statistics, float64, eval."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * gain
                                    / np.sqrt(module.weight[0].numel()))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=generator) * 0.4 - 0.1)
            elif isinstance(module, neuron.ParametricLIFNode):
                module.w.fill_(-0.4)   # 1 / tau = sigmoid(-0.4), not its initial 1 / 2
    return model.double().eval()


def conv_net(step_mode: str = "m") -> torch.nn.Module:
    """conv -> BN -> IF (hard) -> avg pool -> flatten -> linear -> LIF (soft, no decay_input) ->
    linear -> PLIF (decay_input, hard) -> linear (readout)."""
    model = torch.nn.Sequential(
        layer.Conv2d(1, 8, 5, stride=2), layer.BatchNorm2d(8), neuron.IFNode(),
        layer.AvgPool2d(2), layer.Flatten(), layer.Linear(8 * 6 * 6, 48),
        neuron.LIFNode(tau=3.0, decay_input=False, v_reset=None), layer.Dropout(0.3),
        layer.Linear(48, 32), neuron.ParametricLIFNode(init_tau=2.0), layer.Linear(32, 10))
    functional.set_step_mode(model, step_mode)
    return _scaled(model, seed=1, gain=2.5)


class SEWBlock(torch.nn.Module):
    """SEW-ResNet's basic block with the ADD connection: sn(bn(conv(sn(bn(conv(x)))))) + x."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = layer.SeqToANNContainer(torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                             torch.nn.BatchNorm2d(channels))
        self.sn1 = neuron.IFNode(step_mode="m")
        self.conv2 = layer.SeqToANNContainer(torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                             torch.nn.BatchNorm2d(channels))
        self.sn2 = neuron.IFNode(step_mode="m")

    def forward(self, x):
        return self.sn2(self.conv2(self.sn1(self.conv1(x)))) + x


class SEWNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = layer.SeqToANNContainer(torch.nn.Conv2d(1, 6, 3, stride=2), torch.nn.BatchNorm2d(6))
        self.sn = neuron.LIFNode(tau=2.0, step_mode="m")
        self.block = SEWBlock(6)
        self.pool = layer.AvgPool2d(13, step_mode="m")
        self.flatten = layer.Flatten(step_mode="m")
        self.fc = layer.Linear(6, 10, step_mode="m")

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.block(self.sn(self.stem(x))))))


def sew_net() -> torch.nn.Module:
    return _scaled(SEWNet(), seed=2, gain=3.0)


def run(model: torch.nn.Module, pixels: np.ndarray, step_mode: str = "m", shape=(1, 28, 28),
        steps: int = T) -> tuple[dict, np.ndarray]:
    """SpikingJelly's own forward on pixel/255 at every step: ({neuron module path: spikes [T, B,
    ...]}, outputs [T, B, classes])."""
    frame = torch.from_numpy(pixels.astype(np.float64) / 255.0).reshape((len(pixels),) + tuple(shape))
    spikes: dict[str, list] = {}
    hooks = [module.register_forward_hook(lambda m, i, o, key=path: spikes.setdefault(key, []).append(o.detach()))
             for path, module in model.named_modules() if isinstance(module, neuron.BaseNode)]
    functional.reset_net(model)
    with torch.no_grad():
        if step_mode == "m":
            outputs = model(frame.unsqueeze(0).repeat(steps, 1, 1, 1, 1))
        else:
            outputs = torch.stack([model(frame) for _ in range(steps)])
    for hook in hooks:
        hook.remove()
    functional.reset_net(model)
    joined = {key: (torch.stack(parts) if step_mode == "s" else parts[0]).numpy() for key, parts in spikes.items()}
    return joined, outputs.numpy()


def compare(model, step_mode="m", readout="mean", simulate=None, reduce=None):
    """snnc's float execution of `model` against the library's own forward on real digits: every
    neuron layer spike for spike (each firing at a rate that makes the comparison mean something),
    and the readout; returns the Network."""
    from snnc import execute
    from snnc.frontends.torch_module import network_from_module

    pixels = digits()
    theirs, outputs = (simulate or run)(model, pixels, *(() if simulate else (step_mode,)))
    net = network_from_module(model, (1, 28, 28), T, readout=readout)
    trace = execute.run(net, execute.encode(net, pixels))
    neurons = net.metadata["torch"]["neurons"]
    assert sorted(neurons) == sorted(theirs)
    for path, node in neurons.items():
        assert 0.01 < theirs[path].mean() < 0.5, path
        wrong = np.argwhere(trace.spikes[node] != theirs[path])
        assert wrong.size == 0, f"{path}: {len(wrong)} spikes differ, first at {wrong[0].tolist()}"
    expected = reduce(outputs) if reduce else outputs.sum(axis=0) if readout == "mean" else outputs[-1]
    np.testing.assert_allclose(trace.readout, expected, rtol=1e-12, atol=1e-12)
    return net


def snntorch_net(reset: str = "subtract") -> torch.nn.Module:
    """snnTorch's init_hidden modules in an nn.Sequential: conv -> Leaky -> avg pool -> flatten ->
    linear -> Synaptic (subtract; Leaky for 'zero') -> linear (readout)."""
    import snntorch

    second = (snntorch.Synaptic(alpha=0.6, beta=0.8, init_hidden=True, reset_mechanism=reset) if reset != "zero"
              else snntorch.Leaky(beta=0.7, init_hidden=True, reset_mechanism=reset))
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5, stride=2), snntorch.Leaky(beta=0.9, threshold=0.8, init_hidden=True,
                                                           reset_mechanism=reset),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 48), second,
        torch.nn.Linear(48, 10))
    return _scaled(model, seed=3, gain=1.5)


def run_snntorch(model: torch.nn.Module, pixels: np.ndarray) -> tuple[dict, np.ndarray]:
    """snnTorch's own forward, one step per call after resetting the hidden states (its spikes come
    out as float32 0/1, passed on as float64: the same values)."""
    import snntorch
    from snntorch import utils

    frame = torch.from_numpy(pixels.astype(np.float64) / 255.0).reshape(len(pixels), 1, 28, 28)
    spikes: dict[str, list] = {}

    def keep(path):
        def hook(module, inputs, output):
            spikes.setdefault(path, []).append(output.detach().double())
            return output.double()
        return hook

    hooks = [module.register_forward_hook(keep(path))
             for path, module in model.named_modules() if isinstance(module, snntorch.SpikingNeuron)]
    utils.reset(model)
    with torch.no_grad():
        outputs = torch.stack([model(frame) for _ in range(T)])
    for hook in hooks:
        hook.remove()
    return {key: torch.stack(parts).numpy() for key, parts in spikes.items()}, outputs.numpy()


def vgg_net() -> torch.nn.Module:
    """Spiking-VGG style: conv -> BN -> IF -> max pool -> conv -> BN -> LIF -> max pool (3, stride
    2: overlapping windows) -> flatten -> linear (readout)."""
    model = torch.nn.Sequential(
        layer.Conv2d(1, 6, 3, padding=1), layer.BatchNorm2d(6), neuron.IFNode(), layer.MaxPool2d(2),
        layer.Conv2d(6, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.LIFNode(tau=2.0), layer.MaxPool2d(3, 2),
        layer.Flatten(), layer.Linear(8 * 6 * 6, 10))
    functional.set_step_mode(model, "m")
    return _scaled(model, seed=4, gain=2.5)



def snnc_nn_net() -> torch.nn.Module:
    """snnc's own modules (snnc.nn) among SpikingJelly's multi-step layers: conv -> TdBN -> LIF with
    MPR, a soft reset and a learned initial membrane potential (IMP) -> avg pool -> flatten ->
    linear -> IF with IMP -> linear -> snnc's Readout (mean)."""
    from snnc import nn as snnc_nn

    model = torch.nn.Sequential(
        layer.Conv2d(1, 8, 5, stride=2, step_mode="m"), snnc_nn.TdBN(8, vth=0.5),
        snnc_nn.SpikingNeuron(kind="lif", vth=0.5, tau=2.0, reset="soft", reset_amount=0.5, mpr=True,
                              imp_shape=(8, 12, 12)),
        layer.AvgPool2d(2, step_mode="m"), layer.Flatten(step_mode="m"), layer.Linear(8 * 6 * 6, 32, step_mode="m"),
        snnc_nn.SpikingNeuron(kind="if", vth=0.5, imp_shape=(32,)), layer.Linear(32, 10, step_mode="m"),
        snnc_nn.Readout("mean"))
    model = _scaled(model, seed=5, gain=2.0)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, snnc_nn.SpikingNeuron):
                module.imp.copy_(torch.rand(module.imp.shape, generator=generator, dtype=torch.float64) * 0.4)
    return model


def run_snnc_nn(model: torch.nn.Module, pixels: np.ndarray) -> tuple[dict, np.ndarray]:
    """The modules' own multi-step forward: (spikes per neuron module, the readout's per-step sums)."""
    from snnc import nn as snnc_nn

    frame = torch.from_numpy(pixels.astype(np.float64) / 255.0).reshape(len(pixels), 1, 28, 28)
    spikes = {}
    hooks = [module.register_forward_hook(lambda m, i, o, key=path: spikes.__setitem__(key, o.detach().numpy()))
             for path, module in model.named_modules() if isinstance(module, snnc_nn.SpikingNeuron)]
    with torch.no_grad():
        outputs = model(frame.unsqueeze(0).repeat(T, 1, 1, 1, 1))
    for hook in hooks:
        hook.remove()
    return spikes, outputs.numpy()


if __name__ == "__main__":
    for build, simulate in ((conv_net, run), (sew_net, run), (vgg_net, run), (snntorch_net, run_snntorch),
                            (lambda: snntorch_net("zero"), run_snntorch), (snnc_nn_net, run_snnc_nn)):
        fired, _ = simulate(build(), digits())
        print({key: round(float(value.mean()), 3) for key, value in fired.items()})
