"""The source papers' networks as a user brings them (models/paper_nets: SpikingJelly modules and a
trained state dict): a SEW-ResNet of IF neurons with a learned initial membrane potential (IMP)
trained on its last time step (LTS), and an SRIF + MPR + tdBN network trained with TET-S.

snnc reads each as SpikingJelly runs it (every layer spike for spike in float64, on real digits),
and the whole pipeline takes it from `export --model` through verify on every backend, energy and
simulate."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_nets
from clicheck import invoke

from snnc.frontends.torch_module import load_factory

NETS = Path(__file__).resolve().parents[1] / "models" / "paper_nets"
READOUT = {"sew_resnet_imp": "last", "srif_mpr": "mean"}
T = 4


def _trained(factory: str) -> torch.nn.Module:
    model = load_factory(f"{NETS / 'nets.py'}:{factory}")()
    model.load_state_dict(torch.load(NETS / f"{factory}.pt", weights_only=True))
    return model.double().eval()


def test_sew_resnet_with_learned_imp_is_read_as_spikingjelly_runs_it():
    model = _trained("sew_resnet_imp")
    imps = [module.imp for module in model.modules() if hasattr(module, "imp")]
    assert len(imps) == 9 and all(float(imp.detach().abs().max()) > 0.05 for imp in imps)   # learned, not 0
    net = torch_nets.compare(model, readout="last")
    starts = [node.neuron.initial_state for node in net.nodes if node.neuron is not None and node.neuron.kind == "spiking"]
    assert all(np.array_equal(start, imp.detach().numpy()) for start, imp in zip(starts, imps))
    assert sum(node.op == "add" for node in net.nodes) == 3


def test_srif_mpr_network_is_read_as_its_modules_run_it():
    net = torch_nets.compare(_trained("srif_mpr"), simulate=torch_nets.run_snnc_nn)
    neurons = [node.neuron for node in net.nodes if node.neuron is not None and node.neuron.kind == "spiking"]
    assert len(neurons) == 3 and all(n.reset == "soft" and n.mpr for n in neurons)


@pytest.mark.slow
@pytest.mark.parametrize("factory", sorted(READOUT))
def test_export_verify_energy_simulate(tmp_path, factory):
    out = tmp_path / "out"
    result = invoke("export", "--model", f"{NETS / 'nets.py'}:{factory}", "--weights", str(NETS / f"{factory}.pt"),
                    "--T", str(T), "--input-shape", "1,28,28", "--readout", READOUT[factory], "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert fidelity["float_accuracy"] > 0.9 and fidelity["quantized_accuracy"] > 0.9
    result = invoke("verify", str(out), "--samples", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["equivalent"] and set(report["backends"]) == {"reference", "onnx", "onnx-step", "lava", "cycle"}
    result = invoke("energy", str(out), "--samples", "4", "--format", "json")
    assert result.exit_code == 0, result.output
    energy = json.loads(result.stdout)
    result = invoke("simulate", str(out), "--samples", "4", "--json")
    assert result.exit_code == 0, result.output
    simulated = json.loads(result.stdout)
    assert simulated["samples"] == energy["samples"] == 4 and simulated["accuracy"] == energy["accuracy"]
    assert energy["totals"]["synaptic_ops_counted"] > 0 and energy["totals"]["energy_chip_uj"] > 0
    assert simulated["latency_us_per_sample"] > 0


@pytest.mark.slow
def test_the_training_script_writes_weights_export_reads(tmp_path):
    weights = tmp_path / "w.pt"
    done = subprocess.run([sys.executable, str(NETS / "train.py"), "srif_mpr", "--loss", "tet-s", "--epochs", "1",
                           "--train-samples", "64", "--threads", "1", "-o", str(weights)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test accuracy" in done.stdout and not weights.with_name("w.pt.partial").exists()
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(_trained("srif_mpr").state_dict())
