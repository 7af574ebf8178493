"""Property: on small random networks and inputs, reference, ONNX and the cycle simulator agree on
every spike of every layer at every step, and on the readout."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netfactory
from snnc import compiler, execute
from snnc.backends import get_backend
from snnc.targets import load_target

networks = st.fixed_dictionaries({
    "arch": st.sampled_from(["mnist_convnet", "sew_resnet18"]),
    "size": st.sampled_from([8, 12]),
    "T": st.integers(1, 5),
    "type": st.sampled_from(["if", "lif", "srif"]),
    "mpr": st.booleans(),
    "imp": st.booleans(),
    "bn": st.sampled_from(["tdbn", "none"]),
    "readout": st.sampled_from(["mean", "last"]),
    "target": st.sampled_from(["loihi2", "loihi1"]),
    "seed": st.integers(0, 2 ** 16),
})


def _recipe(choice):
    neuron = {"type": choice["type"], "vth": 0.5, "mpr": choice["mpr"], "imp": choice["imp"],
              "reset": "soft" if choice["type"] == "srif" else "hard"}
    if choice["arch"] == "mnist_convnet":
        arch_params = {"channels": [3, 4], "hidden": 6}
        input_shape = [1, choice["size"], choice["size"]]
    else:
        arch_params = {"channels": [3, 4, 4, 4], "blocks": [1, 1, 1, 1]}
        input_shape = [2, 8, 8]
    return {"name": "random", "arch": choice["arch"], "arch_params": arch_params, "input_shape": input_shape,
            "num_classes": 5, "T": choice["T"], "neuron": neuron, "bn": choice["bn"],
            "readout": choice["readout"]}


@pytest.mark.slow   # 12 random networks through three backends
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choice=networks)
def test_backends_agree_on_random_networks(choice):
    spec = _recipe(choice)
    target = load_target(choice["target"])
    if choice["type"] == "srif" and "soft" not in target.arithmetic["reset_modes"]:
        target = load_target("loihi2")
    fixed = compiler.compile_network(netfactory.random_network(spec, seed=choice["seed"]), target).fixed
    images = netfactory.random_images(spec, 3, seed=choice["seed"])
    inputs = execute.encode(fixed, images)
    expected = get_backend("reference").run(fixed, inputs)
    for backend in ("onnx", "cycle"):
        actual = get_backend(backend).run(fixed, inputs)
        for layer, spikes in expected.spikes.items():
            assert np.array_equal(actual.spikes[layer], spikes), f"{backend} {layer}"
        assert np.array_equal(actual.readout, expected.readout), backend
