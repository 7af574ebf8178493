"""`snnc verify`: equivalent backends pass; a planted one-bit difference is found and pinned down."""
import json
import types

import numpy as np
import pytest
from click.testing import CliRunner

from snnc import compiler, verify
from snnc.backends import get_backend
from snnc.cli import main
from snnc.export_dir import ExportDir
from snnc.data import InputSpec, open_inputs

pytestmark = pytest.mark.slow   # every test reads the export of a shipped checkpoint; Lava runs


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_all_backends_agree(lif_export):
    result = invoke("verify", lif_export, "--backends", "reference,onnx,lava,cycle", "--samples", "40", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["equivalent"] is True and report["samples"] == 40
    assert set(report["backends"]) == {"reference", "onnx", "lava", "cycle"}
    assert all(sum(counts.values()) == 0 for counts in report["mismatches"].values())
    fidelity = report["fidelity"]
    assert set(fidelity["spike_agreement"]) == {"conv1", "conv2", "fc1"}
    assert 0.9 < fidelity["quantized_accuracy"] <= 1.0


def _planted_onnx(layer, neuron, bit):
    """The ONNX backend run on the export's parameters with one threshold bit flipped."""
    onnx = get_backend("onnx")

    def run_export(export, inputs, record_voltages=()):
        tampered = export.network.copy()
        threshold = tampered.node(layer).neuron.threshold.reshape(-1)
        threshold[neuron] ^= 1 << bit
        return onnx.run(tampered, inputs, record_voltages)

    return types.SimpleNamespace(NAME="onnx", run_export=run_export)


def test_planted_one_bit_difference_is_found(lif_export, tmp_path, monkeypatch):
    net = ExportDir.open(lif_export).network
    reference = get_backend("reference")
    inputs = open_inputs("mnist5k", InputSpec.of(net), 30).units()
    baseline = reference.run(net, inputs)
    layer = "conv2"
    fired = baseline.spikes[layer].reshape(net.T, 30, -1)
    neuron = int(np.nonzero(fired[:, 3].any(axis=0))[0][7])  # a neuron that fires on sample 3
    bit = 22  # thresholds are below 2^22 here: the flip stops that neuron from ever firing
    assert net.node(layer).neuron.threshold.max() < 2 ** bit
    # Independently: where does that neuron's spike train first change?
    changed = fired[:, :, neuron] != 0
    sample = int(np.nonzero(changed.any(axis=0))[0][0])
    step = int(np.nonzero(changed[:, sample])[0][0])

    real_get_backend = verify.get_backend
    monkeypatch.setattr(verify, "get_backend",
                        lambda name: _planted_onnx(layer, neuron, bit) if name == "onnx" else real_get_backend(name))
    saved = tmp_path / "case.npz"
    result = invoke("verify", lif_export, "--backends", "onnx", "--samples", "30", "--json", "--save-input", saved)
    assert result.exit_code == 1, result.output
    first = json.loads(result.stdout)["first_divergence"]
    assert (first["sample"], first["layer"], first["neuron"], first["step"]) == (sample, layer, neuron, step)
    assert first["values"] == {"reference": 1, "onnx": 0} and first["backend"] == "onnx"
    history = first["membrane_history"]["reference"]
    assert len(history) == net.T
    assert "backends diverge" in result.stderr and "Traceback" not in result.output

    replay = invoke("verify", lif_export, "--backends", "onnx", "--input", saved, "--json",
                    "--save-input", tmp_path / "again.npz")
    assert replay.exit_code == 1
    again = json.loads(replay.stdout)["first_divergence"]
    assert (again["sample"], again["layer"], again["neuron"], again["step"]) == (0, layer, neuron, step)


def test_human_readable_report_names_the_divergence(lif_export, tmp_path, monkeypatch):
    net = ExportDir.open(lif_export).network
    inputs = open_inputs("mnist5k", InputSpec.of(net), 5).units()
    fired = get_backend("reference").run(net, inputs).spikes["fc1"].reshape(net.T, 5, -1)
    neuron = int(np.nonzero(fired.any(axis=(0, 1)))[0][0])
    real_get_backend = verify.get_backend
    monkeypatch.setattr(verify, "get_backend",
                        lambda name: _planted_onnx("fc1", neuron, 22) if name == "onnx" else real_get_backend(name))
    result = invoke("verify", lif_export, "--backends", "onnx", "--samples", "5", "--save-input", tmp_path / "x.npz")
    assert result.exit_code == 1
    assert "FIRST DIVERGENCE" in result.stdout and "layer 'fc1'" in result.stdout
    assert f"neuron {neuron}" in result.stdout and "membrane of that neuron, reference" in result.stdout
