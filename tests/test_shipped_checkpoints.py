"""The shipped MNIST checkpoints through the compiler, on the 1000 real test digits."""
from pathlib import Path

import numpy as np
import pytest
import torch

from snnc import compiler, execute
from snnc.data import InputSpec, load_dataset, open_inputs
from snnc.targets import load_target
from snnc.train import load_checkpoint
from snnc.verify import fidelity

MODELS = Path(__file__).resolve().parent.parent / "models"
CHECKPOINTS = ["mnist_srif.pt", "mnist_lif.pt"]
pytestmark = pytest.mark.slow   # both checkpoints on all 1000 test digits


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset("mnist5k")
    return dataset.test_images, dataset.test_labels


@pytest.fixture(scope="module", params=CHECKPOINTS)
def compiled(request):
    return request.param, compiler.compile_checkpoint(MODELS / request.param, load_target("loihi2"))


def test_folded_network_spikes_exactly_like_pytorch(compiled, digits):
    """Folding tdBN, MPR, decay_input and IMP changes no spike, in any layer, at any step.

    Both sides run in float64; a difference could only come from a membrane lying within rounding
    distance of its threshold (a tie). None occurs on these digits, so none is tolerated.
    """
    name, result = compiled
    images, _ = digits
    model, _ = load_checkpoint(MODELS / name)
    model = model.double()
    inputs = execute.encode(result.folded, images)
    with torch.no_grad():
        y, recorded = model(torch.from_numpy(inputs), record=True)
    trace = execute.run(result.folded, inputs)
    for layer, spikes in trace.spikes.items():
        expected = recorded[layer].numpy().astype(np.uint8)
        assert np.array_equal(spikes, expected), f"{name} {layer}: {(spikes != expected).sum()} spikes differ"
    assert np.allclose(trace.readout, model.readout(y).numpy(), rtol=1e-9, atol=1e-9)


def test_quantized_accuracy_within_half_a_point(compiled):
    name, result = compiled
    report = fidelity(result.folded, result.fixed, open_inputs("mnist5k", InputSpec.of(result.fixed)))
    assert report["float_accuracy"] >= 0.97, name
    assert abs(report["quantized_accuracy"] - report["float_accuracy"]) <= 0.005, report
    assert min(report["spike_agreement"].values()) > 0.95, report["spike_agreement"]
