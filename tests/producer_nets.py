"""Small networks built with each NIR producer's own layers, run by the producer's own code and
exported by its own NIR exporter: the ground truth that tests/test_producers.py holds snnc's NIR
import (`load_nir(..., semantics=<producer>)`) to, spike for spike.

Every producer has `simulate(model, frames, T)` -> {layer key: spikes [T, B, ...] float64} (the
producer's simulation in float64, Rockpool's in float32, `frames` [B, ...] = pixel/255 presented at
every step) and
`export(model, path, input_shape)` (its NIR exporter, written with nir.write). A layer key is the
model's child name of the neuron module; `nir_key` gives the NIR node key of that neuron.

Weights are seeded and scaled (GAINS, one factor per synapse) so that every spiking layer fires
at 5-30 % on real digits; `python tests/producer_nets.py` prints the rates to re-tune them.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Callable, Optional

import nir
import numpy as np
import torch

T = 16
DIGITS = 16
HIDDEN = 32
CLASSES = 10
CHANNELS = 8
DENSE_INPUT = (784,)
IMAGE_INPUT = (1, 28, 28)
ARCHS = ("dense", "conv", "conv-pool-first")


def digits() -> np.ndarray:
    """The first 16 test digits of the builtin mnist5k set: uint8 [16, 1, 28, 28]."""
    from snnc.data import load_dataset

    return load_dataset("mnist5k").test_images[:DIGITS]


def frames(pixels: np.ndarray, input_shape: tuple[int, ...]) -> torch.Tensor:
    """pixel/255 in float64, shaped [B, *input_shape]: the input current of every step."""
    return torch.from_numpy(pixels.reshape((len(pixels),) + tuple(input_shape)).astype(np.float64) / 255.0)


def _synapses(arch: str, gains: tuple[float, float], seed: int, bias: bool = True) -> list[torch.nn.Module]:
    """The two seeded synapses of an architecture, their weights (and biases) times `gains`."""
    torch.manual_seed(seed)
    if arch == "dense":
        first = torch.nn.Linear(784, HIDDEN, bias=bias)
        second = torch.nn.Linear(HIDDEN, CLASSES, bias=bias)
    else:
        first = torch.nn.Conv2d(1, CHANNELS, 5, stride=2, bias=bias)    # 28x28 -> 12x12
        second = torch.nn.Linear(CHANNELS * 6 * 6, CLASSES, bias=bias)  # after a 2x2 pool
    with torch.no_grad():
        for layer, gain in zip((first, second), gains):
            layer.weight.mul_(gain)
            if layer.bias is not None:
                layer.bias.mul_(gain)
    return [first, second]


def hidden_shape(arch: str) -> tuple[int, ...]:
    """The shape of the first spiking layer."""
    return {"dense": (HIDDEN,), "conv": (CHANNELS, 12, 12), "conv-pool-first": (CHANNELS, 6, 6)}[arch]


def input_shape(arch: str) -> tuple[int, ...]:
    return DENSE_INPUT if arch == "dense" else IMAGE_INPUT


def _sequence(arch: str, synapses, neurons, pool: Callable[[], torch.nn.Module],
              flatten: Callable[[], torch.nn.Module]) -> list[torch.nn.Module]:
    """The layer order of each architecture: dense: L N L N; conv: C N P F L N; conv-pool-first:
    C P N F L N."""
    first, second = synapses
    hidden, out = neurons
    if arch == "dense":
        return [first, hidden, second, out]
    if arch == "conv":
        return [first, hidden, pool(), flatten(), second, out]
    return [first, pool(), hidden, flatten(), second, out]


def _float64_spikes(_module, _inputs, output):
    """A forward hook: snnTorch's and Sinabs' spike functions return float32 spikes (0/1 or small
    counts, exact in either type), which the float64 layers after them cannot take."""
    if isinstance(output, tuple):
        return tuple(o.double() if isinstance(o, torch.Tensor) else o for o in output)
    return output.double()


def _neuron_keys(model: torch.nn.Module, kinds: tuple[type, ...]) -> list[str]:
    return [name for name, child in model.named_children() if isinstance(child, kinds)]


# --- snnTorch -------------------------------------------------------------------------------------

def snntorch_model(arch: str, variant: str, gains: tuple[float, float], seed: int = 0) -> torch.nn.Module:
    """variant: leaky-subtract, leaky-zero (Leaky's own defaults otherwise: reset_delay=True),
    synaptic-subtract, synaptic-zero, rleaky (dense only: all-to-all recurrent Linear)."""
    import snntorch as snn

    kind, _, reset = variant.partition("-")
    reset = reset or "subtract"

    def neuron(shape, beta, output):
        per_neuron = dict(beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True,
                          reset_mechanism=reset, output=output)
        if kind == "leaky":
            return snn.Leaky(**per_neuron)
        if kind == "synaptic":
            return snn.Synaptic(alpha=torch.full(shape, 0.6), **per_neuron)
        torch.manual_seed(seed + 1)
        return snn.RLeaky(linear_features=shape[0], all_to_all=True, **per_neuron)

    synapses = _synapses(arch, gains, seed)
    neurons = (neuron(hidden_shape(arch), 0.9, False), neuron((CLASSES,), 0.8, True))
    if kind == "rleaky":
        for recurrent in neurons:
            with torch.no_grad():
                recurrent.recurrent.weight.mul_(0.5)
            # RLeaky feeds its own float32 spikes to its recurrent Linear
            recurrent.recurrent.register_forward_pre_hook(lambda _, args: (args[0].double(),))
    for layer in neurons:
        layer.register_forward_hook(_float64_spikes)
    layers = _sequence(arch, synapses, neurons, lambda: torch.nn.AvgPool2d(2), torch.nn.Flatten)
    return torch.nn.Sequential(*layers).double()


def snntorch_simulate(model: torch.nn.Module, x: torch.Tensor, steps: int) -> dict[str, np.ndarray]:
    """snnTorch's own step loop over an nn.Sequential: spikes [T, B, ...] of each neuron layer, by
    module name (float64 throughout: its spike functions return float32, cast back here)."""
    import snntorch as snn
    from snntorch import utils as snn_utils

    keys = _neuron_keys(model, (snn.Leaky, snn.Synaptic, snn.RLeaky))
    records = {key: [] for key in keys}
    snn_utils.reset(model)
    with torch.no_grad():
        for _ in range(steps):
            h = x
            for name, layer in model.named_children():
                h = layer(h)
                if isinstance(h, tuple):
                    h = h[0]
                h = h.double()
                if name in records:
                    records[name].append(h.numpy().copy())
    return {key: np.stack(r) for key, r in records.items()}


def snntorch_export(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    from snntorch import utils as snn_utils
    from snntorch.export_nir import export_to_nir

    snn_utils.reset(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_to_nir(model, torch.zeros((1,) + shape, dtype=torch.float64), ignore_dims=[0])
    nir.write(str(path), graph)
    return path


# --- Norse ----------------------------------------------------------------------------------------

NORSE_DT = 1e-3


def norse_model(arch: str, variant: str, gains: tuple[float, float], seed: int = 0) -> torch.nn.Module:
    """variant: lifbox (LIFBoxCell), lif (LIFCell, current-based), iaf (IAFCell); Norse's
    default dt = 1e-3 and time constants tau_mem = 10 ms (and tau_syn = 5 ms)."""
    import norse.torch as norse

    def neuron(shape):
        ones = torch.ones(shape)
        if variant == "lifbox":
            return norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=100.0 * ones, v_leak=0 * ones,
                                                           v_th=ones, v_reset=0 * ones))
        if variant == "lif":
            return norse.LIFCell(norse.LIFParameters(tau_syn_inv=200.0 * ones, tau_mem_inv=100.0 * ones,
                                                     v_leak=0 * ones, v_th=ones, v_reset=0 * ones))
        return norse.IAFCell(norse.IAFParameters(v_th=ones, v_reset=0 * ones))

    layers = _sequence(arch, _synapses(arch, gains, seed), (neuron(hidden_shape(arch)), neuron((CLASSES,))),
                       lambda: torch.nn.AvgPool2d(2), torch.nn.Flatten)
    return norse.SequentialState(*layers).double()


def _norse_cells() -> tuple[type, ...]:
    import norse.torch as norse

    return (norse.LIFBoxCell, norse.LIFCell, norse.IAFCell)


def norse_simulate(model: torch.nn.Module, x: torch.Tensor, steps: int) -> dict[str, np.ndarray]:
    keys = _neuron_keys(model, _norse_cells())
    records = {key: [] for key in keys}
    states = {key: None for key in keys}
    with torch.no_grad():
        for _ in range(steps):
            h = x
            for name, layer in model.named_children():
                if name in states:
                    h, states[name] = layer(h, states[name])
                    records[name].append(h.numpy().copy())
                else:
                    h = layer(h)
    return {key: np.stack(r).astype(np.float64) for key, r in records.items()}


def norse_export(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    import norse.torch as norse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = norse.to_nir(model, torch.zeros((1,) + shape, dtype=torch.float64), dt=NORSE_DT)
    nir.write(str(path), graph)
    return path


# --- Sinabs ---------------------------------------------------------------------------------------

def sinabs_model(arch: str, variant: str, gains: tuple[float, float], seed: int = 0) -> torch.nn.Module:
    """variant: <iaf|lif>-<multi|single-reset|single-subtract>: MultiSpike + MembraneSubtract
    (Sinabs' default), SingleSpike + MembraneReset, SingleSpike + MembraneSubtract. Squeezed layers
    ([B*T, ...] in, batch-major) for T steps; LIF with tau_mem = 8 steps (Sinabs' default
    norm_input=True)."""
    import sinabs.activation as sa
    import sinabs.layers as sl

    kind, _, rule = variant.partition("-")
    spike_fn, reset_fn = {"multi": (sa.MultiSpike, sa.MembraneSubtract()),
                          "single-reset": (sa.SingleSpike, sa.MembraneReset()),
                          "single-subtract": (sa.SingleSpike, sa.MembraneSubtract())}[rule]

    def neuron(shape):
        common = dict(spike_threshold=torch.ones(shape), spike_fn=spike_fn, reset_fn=reset_fn, num_timesteps=T)
        if kind == "iaf":
            return sl.IAFSqueeze(**common)
        return sl.LIFSqueeze(tau_mem=torch.full(shape, 8.0), **common)

    # a 2x2 SumPool2d sums what an AvgPool2d averages: the synapse it feeds gets weights 4 times smaller
    pooled = 0 if arch == "conv-pool-first" else 1
    gains = tuple(g / 4 if index == pooled and arch != "dense" else g for index, g in enumerate(gains))
    neurons = (neuron(hidden_shape(arch)), neuron((CLASSES,)))
    for layer in neurons:
        layer.register_forward_hook(_float64_spikes)
    layers = _sequence(arch, _synapses(arch, gains, seed), neurons, lambda: sl.SumPool2d(2), torch.nn.Flatten)
    return torch.nn.Sequential(*layers).double()


def _sinabs_neurons() -> tuple[type, ...]:
    import sinabs.layers as sl

    return (sl.IAFSqueeze, sl.LIFSqueeze)


def _sinabs_reset(model: torch.nn.Module) -> None:
    for child in model.children():
        if isinstance(child, _sinabs_neurons()):
            child.reset_states()


def sinabs_simulate(model: torch.nn.Module, x: torch.Tensor, steps: int) -> dict[str, np.ndarray]:
    """Sinabs runs all steps at once on [B*T, ...] (sample-major); spikes come back [T, B, ...]."""
    batch = x.shape[0]
    _sinabs_reset(model)
    h = x.unsqueeze(1).expand((batch, steps) + tuple(x.shape[1:])).reshape((batch * steps,) + tuple(x.shape[1:]))
    records = {}
    with torch.no_grad():
        for name, layer in model.named_children():
            h = layer(h)
            if isinstance(layer, _sinabs_neurons()):
                per_sample = h.reshape((batch, steps) + tuple(h.shape[1:]))
                records[name] = per_sample.transpose(0, 1).numpy().astype(np.float64)
    _sinabs_reset(model)
    return records


def sinabs_export(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    """sinabs.to_nir traces T steps of one sample; the graph needs infer_types before nir.write."""
    import sinabs

    _sinabs_reset(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = sinabs.to_nir(model, torch.zeros((T,) + shape, dtype=torch.float64))
    graph.infer_types()
    _sinabs_reset(model)
    nir.write(str(path), graph)
    return path


# --- SpikingJelly ---------------------------------------------------------------------------------

SPIKINGJELLY_DT = 1e-4


def spikingjelly_model(arch: str, variant: str, gains: tuple[float, float], seed: int = 0) -> torch.nn.Module:
    """variant: if-hard, if-soft (v_reset=None: subtract the threshold), lif-<hard|soft>-<decay|nodecay>
    (decay_input True/False, tau = 2, SpikingJelly's default); multi-step mode ('m')."""
    from spikingjelly.activation_based import layer, neuron

    parts = variant.split("-")
    v_reset = 0.0 if parts[1] == "hard" else None

    def node():
        if parts[0] == "if":
            return neuron.IFNode(v_threshold=1.0, v_reset=v_reset, step_mode="m")
        return neuron.LIFNode(tau=2.0, decay_input=parts[2] == "decay", v_threshold=1.0, v_reset=v_reset,
                              step_mode="m")

    first, second = _synapses(arch, gains, seed)
    if arch == "dense":
        synapses = [layer.Linear(784, HIDDEN, step_mode="m"), layer.Linear(HIDDEN, CLASSES, step_mode="m")]
    else:
        synapses = [layer.Conv2d(1, CHANNELS, 5, stride=2, step_mode="m"),
                    layer.Linear(CHANNELS * 6 * 6, CLASSES, step_mode="m")]
    for mine, seeded in zip(synapses, (first, second)):
        mine.load_state_dict(seeded.state_dict())
    layers = _sequence(arch, synapses, (node(), node()), lambda: layer.AvgPool2d(2, step_mode="m"),
                       lambda: layer.Flatten(step_mode="m"))
    return torch.nn.Sequential(*layers).double()


def spikingjelly_simulate(model: torch.nn.Module, x: torch.Tensor, steps: int) -> dict[str, np.ndarray]:
    """Multi-step mode: the whole [T, B, ...] sequence through each layer in turn."""
    from spikingjelly.activation_based import functional, neuron

    model.eval()
    functional.reset_net(model)
    h = x.unsqueeze(0).expand((steps,) + tuple(x.shape)).contiguous()
    records = {}
    with torch.no_grad():
        for name, layer in model.named_children():
            h = layer(h)
            if isinstance(layer, neuron.BaseNode):
                records[name] = h.numpy().astype(np.float64)
    functional.reset_net(model)
    return records


def _spikingjelly_shapes(model: torch.nn.Module, shape: tuple[int, ...]) -> dict[torch.nn.Module, tuple]:
    """Per-sample input shape of every layer (multi-step [T, B, ...] with T = B = 1)."""
    from spikingjelly.activation_based import functional

    shapes = {}
    hooks = [child.register_forward_hook(lambda m, args, out: shapes.__setitem__(m, tuple(args[0].shape[2:])))
             for child in model.children()]
    with torch.no_grad():
        model(torch.zeros((1, 1) + shape, dtype=torch.float64))
    for hook in hooks:
        hook.remove()
    functional.reset_net(model)
    return shapes


def spikingjelly_export(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    """SpikingJelly 0.0.0.0.14 has no NIR exporter. This writes the graph the way its development
    exporter (spikingjelly/activation_based/nir_exchange/to_nir.py, nirtorch.torch_to_nir with one
    mapping per module, dt = 1e-4) does: IF as r = 1/dt, v_reset = 0 for soft reset (NIR cannot say
    soft); LIF as tau = tau_sj * dt, r = 1 with decay_input else tau_sj, v_leak = v_reset = v_reset
    or 0; Linear/Affine, Conv2d with the input's (H, W), AvgPool2d, Flatten without the T, B dims."""
    import nirtorch
    from spikingjelly.activation_based import layer, neuron

    dt = SPIKINGJELLY_DT
    shapes = _spikingjelly_shapes(model, shape)

    def full(module, value):
        return np.full(shapes[module], float(value))

    def if_node(module):
        return nir.IF(r=full(module, 1.0 / dt), v_threshold=full(module, module.v_threshold),
                      v_reset=full(module, module.v_reset or 0.0))

    def lif_node(module):
        reset = module.v_reset or 0.0
        return nir.LIF(tau=full(module, module.tau * dt), r=full(module, 1.0 if module.decay_input else module.tau),
                       v_leak=full(module, reset), v_threshold=full(module, module.v_threshold),
                       v_reset=full(module, reset))

    def affine(module):
        return nir.Affine(module.weight.detach().numpy(), module.bias.detach().numpy())

    def conv(module):
        return nir.Conv2d(input_shape=shapes[module][-2:], weight=module.weight.detach().numpy(),
                          stride=module.stride, padding=module.padding, dilation=module.dilation,
                          groups=module.groups, bias=module.bias.detach().numpy())

    def pool(module):
        return nir.AvgPool2d(kernel_size=np.array([module.kernel_size] * 2), stride=np.array([module.stride] * 2),
                             padding=np.array([module.padding] * 2))

    def flatten(module):
        return nir.Flatten(input_type=shapes[module], start_dim=module.start_dim - 1, end_dim=module.end_dim)

    mapping = {layer.Linear: affine, layer.Conv2d: conv, layer.AvgPool2d: pool, layer.Flatten: flatten,
               neuron.IFNode: if_node, neuron.LIFNode: lif_node}
    graph = nirtorch.torch_to_nir(model, mapping, type_check=True)
    nir.write(str(path), graph)
    return path


# --- Rockpool ------------------------------------------------------------------------------------

# Time constants and step exactly representable in float32, so that Rockpool's float32 simulation and
# snnc's float64 one start from the same numbers.
ROCKPOOL_DT = 1 / 1024
ROCKPOOL_TAU_MEM = 1 / 64
ROCKPOOL_TAU_SYN = 1 / 128


def rockpool_model(arch: str, variant: str, gains: tuple[float, float], seed: int = 0) -> torch.nn.Module:
    """variant: <cuba|lif>-<single|multi>: LIFTorch (exported as CubaLIF) or LIFNeuronTorch (LIF),
    with max_spikes_per_dt = 1 (single) or Rockpool's default 2**16 (multi); dense only (its NIR
    exporter writes no convolution). Rockpool's modules stay float32: after `.double()`, LIFTorch's
    recurrent F.linear (rockpool/nn/modules/torch/lif_torch.py:691, run even without has_rec) mixes
    float32 and float64 and fails, so the model and its simulation are float32."""
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFNeuronTorch, LIFTorch, LinearTorch

    kind, _, spikes = variant.partition("-")
    limit = {"single": 1.0, "multi": 2.0 ** 16}[spikes]

    def neuron(size: int) -> torch.nn.Module:
        common = dict(tau_mem=ROCKPOOL_TAU_MEM, dt=ROCKPOOL_DT, max_spikes_per_dt=limit)
        if kind == "cuba":
            return LIFTorch((size,), tau_syn=ROCKPOOL_TAU_SYN, **common)
        return LIFNeuronTorch((size,), **common)

    def linear(seeded: torch.nn.Linear) -> torch.nn.Module:
        return LinearTorch((seeded.in_features, seeded.out_features), weight=seeded.weight.detach().T.float(),
                           bias=seeded.bias.detach().float(), has_bias=True)

    first, second = _synapses(arch, gains, seed)
    return Sequential(linear(first), neuron(HIDDEN), linear(second), neuron(CLASSES))


def rockpool_simulate(model: torch.nn.Module, x: torch.Tensor, steps: int) -> dict[str, np.ndarray]:
    """Rockpool runs [B, T, N] at once in float32 and records each module's spikes [B, T, N]."""
    from rockpool.nn.modules import LIFNeuronTorch, LIFTorch

    keys = _neuron_keys(model, (LIFTorch, LIFNeuronTorch))
    sequence = x.float().unsqueeze(1).expand((x.shape[0], steps) + tuple(x.shape[1:])).contiguous()
    model.reset_state()
    with torch.no_grad():
        _, _, record = model(sequence, record=True)
    model.reset_state()
    return {key: record[key]["spikes"].transpose(0, 1).numpy().astype(np.float64) for key in keys}


def rockpool_export(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    """to_nir traces one step of one sample ([1, 784], the batch dimension that snnc drops)."""
    from rockpool.nn.modules.torch.nir import to_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = to_nir(model, torch.zeros((1,) + shape))
    nir.write(str(path), graph)
    return path


# --- the table of cases ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Producer:
    name: str
    build: Callable[..., torch.nn.Module]
    simulate: Callable[[torch.nn.Module, torch.Tensor, int], dict[str, np.ndarray]]
    export: Callable[[torch.nn.Module, Path, tuple[int, ...]], Path]
    variants: tuple[str, ...]
    archs: tuple[str, ...] = ARCHS[:2]
    nir_key: Callable[[str], str] = str


PRODUCERS = {
    "snntorch": Producer("snntorch", snntorch_model, snntorch_simulate, snntorch_export,
                         ("leaky-subtract", "leaky-zero", "synaptic-subtract", "synaptic-zero", "rleaky")),
    "norse": Producer("norse", norse_model, norse_simulate, norse_export, ("lifbox", "lif", "iaf")),
    "sinabs": Producer("sinabs", sinabs_model, sinabs_simulate, sinabs_export,
                       tuple(f"{k}-{r}" for k in ("iaf", "lif") for r in ("multi", "single-reset", "single-subtract")),
                       ARCHS),
    # torch.fx names the Sequential's child "1" node "_1"
    "spikingjelly": Producer("spikingjelly", spikingjelly_model, spikingjelly_simulate, spikingjelly_export,
                             ("if-hard", "if-soft", "lif-hard-decay", "lif-hard-nodecay", "lif-soft-decay",
                              "lif-soft-nodecay"), ARCHS, lambda key: f"_{key}"),
    "rockpool": Producer("rockpool", rockpool_model, rockpool_simulate, rockpool_export,
                         ("cuba-single", "lif-single", "cuba-multi"), ("dense",)),
}

# What the graph does not record, per (producer, variant): the choices passed as load_nir(assume=...).
ASSUME = {
    ("snntorch", "leaky-subtract"): {"reset": "subtract"},
    ("snntorch", "leaky-zero"): {"reset": "zero"},
    ("snntorch", "synaptic-subtract"): {"reset": "subtract"},
    ("snntorch", "synaptic-zero"): {"reset": "zero"},
    ("snntorch", "rleaky"): {"reset": "subtract"},
    ("sinabs", "iaf-multi"): {"spikes": "multi", "reset": "subtract"},
    ("sinabs", "iaf-single-reset"): {"spikes": "single", "reset": "zero"},
    ("sinabs", "iaf-single-subtract"): {"spikes": "single", "reset": "subtract"},
    ("sinabs", "lif-multi"): {"spikes": "multi", "reset": "subtract"},
    ("sinabs", "lif-single-reset"): {"spikes": "single", "reset": "zero"},
    ("sinabs", "lif-single-subtract"): {"spikes": "single", "reset": "subtract"},
    ("spikingjelly", "if-hard"): {"reset": "zero"},
    ("spikingjelly", "if-soft"): {"reset": "subtract"},
    ("spikingjelly", "lif-hard-decay"): {"reset": "zero"},
    ("spikingjelly", "lif-hard-nodecay"): {"reset": "zero"},
    ("spikingjelly", "lif-soft-decay"): {"reset": "subtract"},
    ("spikingjelly", "lif-soft-nodecay"): {"reset": "subtract"},
    ("rockpool", "cuba-single"): {"spikes": "single"},
    ("rockpool", "cuba-multi"): {"spikes": "multi"},
    ("rockpool", "lif-single"): {"spikes": "single"},
}

# The cases snnc refuses, per (producer, variant): what the InputError must say (besides the node's
# name). Their producers' simulations still run (and must fire), so the table stays complete.
REFUSED = {
    ("snntorch", "synaptic-zero"): "holds the membrane at 0 for the whole step after a spike",
}

# Weight gains (one factor for both synapses) per (producer, variant): the neurons that scale their
# input down (Norse's dt/tau = 0.1, Sinabs' norm_input 1 - exp(-1/8), SpikingJelly's decay_input 1/2)
# get larger weights, Rockpool's (it adds its input unscaled; LIFTorch's current settles at 7.5 times it)
# smaller ones, so that every spiking layer fires at 5-30 % on the 16 digits (the rates are
# printed by running this file).
GAINS = {("norse", "lifbox"): 40.0, ("norse", "lif"): 8.0,
         **{("sinabs", f"lif-{rule}"): 30.0 for rule in ("multi", "single-reset", "single-subtract")},
         ("spikingjelly", "lif-hard-decay"): 10.0, ("spikingjelly", "lif-soft-decay"): 10.0,
         **{("rockpool", f"cuba-{spikes}"): 1.0 for spikes in ("single", "multi")}, ("rockpool", "lif-single"): 3.0}
DEFAULT_GAIN = 4.0


def cases() -> list[tuple[str, str, str]]:
    """Every (producer, arch, variant) the suite checks."""
    table = []
    for producer in PRODUCERS.values():
        for arch in producer.archs:
            for variant in producer.variants:
                if variant == "rleaky" and arch != "dense":
                    continue
                table.append((producer.name, arch, variant))
    return table


def build(producer: str, arch: str, variant: str) -> torch.nn.Module:
    gain = GAINS.get((producer, variant), DEFAULT_GAIN)
    return PRODUCERS[producer].build(arch, variant, (gain, gain))


def assumptions(producer: str, variant: str) -> Optional[dict]:
    return ASSUME.get((producer, variant))


def refusal(producer: str, variant: str) -> Optional[str]:
    """What snnc's refusal of a case says, or None where snnc must reproduce it."""
    return REFUSED.get((producer, variant))


if __name__ == "__main__":
    pixels = digits()
    for case in cases():
        producer = PRODUCERS[case[0]]
        spikes = producer.simulate(build(*case), frames(pixels, input_shape(case[1])), T)
        print(case, {key: round(float((s > 0).mean()), 3) for key, s in spikes.items()})
