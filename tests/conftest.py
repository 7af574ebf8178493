"""Shared fixtures: a tiny recipe on the 8x8 digits, fast enough to train inside a test."""
import pytest


@pytest.fixture
def tiny_recipe():
    return {
        "name": "tiny-digits",
        "arch": "mnist_convnet",
        "arch_params": {"channels": [8, 16], "hidden": 32},
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "T": 2,
        "neuron": {"type": "srif", "vth": 0.5, "mpr": True, "imp": True},
        "bn": "tdbn",
        "readout": "mean",
    }
