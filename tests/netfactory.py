"""Untrained but non-trivial networks for tests: random weights, batch-norm statistics and IMP.

(Kept as a plain module next to the tests; lava-nc installs its own top-level `tests` package, so
the test directory is not a package.)
"""
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml

from snnc import models
from snnc.frontends.checkpoint import network_from_model

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def recipe(name: str, **overrides) -> dict:
    """A shipped recipe (models/NAME.yaml) with top-level fields replaced."""
    spec = yaml.safe_load((MODELS_DIR / f"{name}.yaml").read_text())
    spec.update(overrides)
    return spec


def random_model(spec: dict, seed: int = 0):
    """A model of `spec` whose batch norms and IMPs hold random, trained-looking values (eval mode)."""
    torch.manual_seed(seed)
    model = models.build(spec)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_var"):
                channels = module.running_var.shape
                module.running_var.copy_(0.5 + 1.5 * torch.rand(channels, generator=generator))
                module.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
                module.weight.copy_(torch.rand(channels, generator=generator) * 1.5 - 0.25)
                module.bias.copy_(torch.rand(channels, generator=generator) * 0.4 - 0.1)
            if getattr(module, "imp", None) is not None:
                module.imp.copy_(torch.rand(module.imp.shape, generator=generator) - 0.5)
    return model.eval()


def random_network(spec: dict, seed: int = 0):
    """The float IR of random_model(spec, seed)."""
    return network_from_model(random_model(spec, seed), spec["name"])


def random_images(spec: dict, count: int, seed: int = 0) -> np.ndarray:
    """uint8 images shaped like the recipe's input."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count,) + tuple(spec["input_shape"]), dtype=np.int64).astype(np.uint8)


def netx_file(path):
    """784 input spikes -> dense 64 CUBA neurons -> dense 10 without neuron (netx's integrator),
    laid out as lava-dl's export_hdf5 writes it."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        shapes = {0: ("input", [784]), 1: ("dense", [64]), 2: ("dense", [10])}
        for index, (kind, shape) in shapes.items():
            group = layers.create_group(str(index))
            group.create_dataset("type", (1,), "S10", [kind.encode("ascii")])
            group.create_dataset("shape", data=np.array(shape))
        for index, (inputs, outputs) in ((1, (784, 64)), (2, (64, 10))):
            group = layers[str(index)]
            group.create_dataset("inFeatures", data=inputs)
            group.create_dataset("outFeatures", data=outputs)
            group.create_dataset("weight", data=rng.integers(-40, 41, (outputs, inputs)).astype(np.float32))
        neuron = layers["1"].create_group("neuron")
        for key, value in (("type", "CUBA"), ("iDecay", 1024), ("vDecay", 256), ("vThMant", 200),
                           ("refDelay", 1), ("gradedSpike", False)):
            neuron.create_dataset(key, data=value)
        simulation = f.create_group("simulation")
        simulation.create_dataset("Ts", data=1)
        simulation.create_dataset("tSample", data=8)
    return path


def integer_neuron(n: int, kind: str, threshold: int):
    """A fixed-point IF population of n neurons (hard reset, no leak, current kept one step), or
    the readout integrator when kind is not 'spiking'."""
    from snnc.ir import Neuron

    spiking = kind == "spiking"
    return Neuron(kind=kind, threshold=np.full((n,), threshold, np.int64) if spiking else None,
                  reset="hard" if spiking else "none", reset_amount=None, bias=np.zeros((n,), np.int64),
                  initial_state=np.zeros((n,), np.int64), v_decay=0, u_decay=4095)


def plain_reshape_op(node, source: np.ndarray):
    """A flatten or sum pool of [T, B, ...] values, written out for the tests' plain step loops;
    None for any other op."""
    T, B = source.shape[:2]
    if node.op == "flatten":
        return source.reshape(T, B, -1)
    if node.op == "sumpool":
        k = node.attrs["kernel"]
        c, h, w = source.shape[2:]
        return source.reshape(T, B, c, h // k, k, w // k, k).sum(axis=(4, 6))
    return None


def assert_same_trace(expected, got) -> None:
    """Two backends' traces agree: every layer's spikes (or counts), the readout per step and at
    the end, and the overflow events."""
    assert set(got.spikes) == set(expected.spikes)
    for name, spikes in expected.spikes.items():
        mismatch = np.argwhere(got.spikes[name] != spikes)
        assert mismatch.size == 0, f"layer {name}: {len(mismatch)} values differ, first at {mismatch[0]}"
    np.testing.assert_array_equal(got.readout_steps, expected.readout_steps)
    np.testing.assert_array_equal(got.readout, expected.readout)
    assert got.overflow == expected.overflow
