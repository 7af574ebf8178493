"""`snnc energy`: counts checked against independent counts, the papers' estimate, and the CI gates."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import torch.nn.functional as F
from click.testing import CliRunner

from snnc import compiler, energy
from snnc.backends import get_backend
from snnc.cli import main
from snnc.train import load_checkpoint
from snnc.export_dir import ExportDir
from snnc.data import InputSpec, open_inputs

MODELS = Path(__file__).resolve().parent.parent / "models"
SAMPLES = 40
pytestmark = pytest.mark.slow   # every test reads the export of a shipped checkpoint


@pytest.fixture(scope="module")
def report(lif_export):
    return energy.energy_report(lif_export, samples=SAMPLES)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _fanout_count(events: torch.Tensor, weight_shape, stride=1, padding=0) -> float:
    """Synapses driven by the non-zero entries of `events` [N, C, H, W] through a conv: a conv of
    the event indicator with an all-ones kernel sums, per output, the in-bound inputs that fire."""
    ones = torch.ones(weight_shape, dtype=torch.float64)
    return float(F.conv2d((events != 0).double(), ones, stride=stride, padding=padding).sum())


def test_counted_sops_equal_an_independent_count(lif_export, report):
    """Exact: the integer reference's spikes pushed through all-ones convolutions in PyTorch."""
    net = ExportDir.open(lif_export).network
    inputs = open_inputs("mnist5k", InputSpec.of(net), SAMPLES).units()
    spikes = get_backend("reference").run(net, inputs).spikes
    merge = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float64)).flatten(0, 1)  # noqa: E731
    pooled1 = F.avg_pool2d(merge(spikes["conv1"]), 2)
    pooled2 = F.avg_pool2d(merge(spikes["conv2"]), 2)
    shape = {name: net.node(name).weight.shape for name in ("conv1", "conv2", "fc1", "readout")}
    independent = {
        "conv1": _fanout_count(merge(inputs), shape["conv1"], padding=1),
        "conv2": _fanout_count(pooled1, shape["conv2"], padding=1),
        "fc1": float((pooled2.flatten(1) != 0).sum()) * shape["fc1"][0],
        "readout": float(merge(spikes["fc1"]).sum()) * shape["readout"][0],
    }
    counted = {row["layer"]: row["synaptic_ops_counted"] * SAMPLES for row in report["layers"]}
    assert counted == pytest.approx(independent, rel=0, abs=1e-6)


def test_counted_sops_track_hooks_on_the_float_model(report, lif_export):
    """Forward hooks on the trained float PyTorch model see nearly the same spikes (not exactly:
    quantization flips a few per cent of them), so the counts agree within a few per cent."""
    model, _ = load_checkpoint(MODELS / "mnist_lif.pt")
    seen = {}
    for node in model.nodes:
        if node.synapse is not None:
            node.synapse.register_forward_hook(
                lambda module, args, out, name=node.name: seen.__setitem__(name, args[0].detach()))
    from snnc.data import encode, load_dataset

    images = load_dataset("mnist5k").test_images[:SAMPLES]
    with torch.no_grad():
        model(encode(torch.from_numpy(images), 4))
    net = ExportDir.open(lif_export).network
    shape = {name: net.node(name).weight.shape for name in ("conv1", "conv2", "fc1", "readout")}
    fanout = {"conv1": _fanout_count(seen["conv1"], shape["conv1"], padding=1),
              "conv2": _fanout_count(seen["conv2"], shape["conv2"], padding=1),
              "fc1": float((seen["fc1"] != 0).sum()) * shape["fc1"][0],
              "readout": float((seen["readout"] != 0).sum()) * shape["readout"][0]}
    for row in report["layers"]:
        assert row["synaptic_ops_counted"] * SAMPLES == pytest.approx(fanout[row["layer"]], rel=0.05)


def test_papers_estimate(report, lif_export):
    net = ExportDir.open(lif_export).network
    rows = {row["layer"]: row for row in report["layers"]}
    channels1, channels2, hidden = (net.node(n).weight.shape[0] for n in ("conv1", "conv2", "fc1"))
    assert rows["conv1"]["macs"] == 3 * 3 * 28 * 28 * 1 * channels1 and rows["conv1"]["sops_estimate"] == 0
    assert rows["fc1"]["flops"] == channels2 * 7 * 7 * hidden
    inputs = open_inputs("mnist5k", InputSpec.of(net), SAMPLES).units()
    rate = get_backend("reference").run(net, inputs).spikes["conv2"].mean()
    assert rows["fc1"]["sops_estimate"] == pytest.approx(rate * 4 * channels2 * 7 * 7 * hidden)
    assert rows["fc1"]["energy_45nm_estimate_pj"] == pytest.approx(0.9 * rows["fc1"]["sops_estimate"])
    assert rows["conv1"]["energy_45nm_estimate_pj"] == pytest.approx(4.6 * rows["conv1"]["macs"])
    totals = report["totals"]
    assert totals["energy_chip_uj"] == pytest.approx(sum(r["energy_chip_pj"] for r in rows.values()) / 1e6)
    assert totals["latency_us"] > 0 and totals["chip_samples_per_second"] > 0


def test_chip_energy_by_event_is_each_kind_of_event_at_its_price(report, lif_export):
    prices = yaml.safe_load((MODELS.parent / "targets" / "loihi2.yaml").read_text())["energy_pj"]
    rows, totals = report["layers"], report["totals"]
    by_event = totals["energy_chip_by_event_pj"]
    assert by_event["synaptic_op"] == pytest.approx(23.6 * totals["synaptic_ops_counted"])
    for kind, count in (("synaptic_op", "synaptic_ops_counted"), ("neuron_update_active", "neuron_updates_active"),
                        ("neuron_update_inactive", "neuron_updates_inactive")):
        assert by_event[kind] == pytest.approx(prices[kind] * sum(row[count] for row in rows)), kind
    assert sum(by_event.values()) == pytest.approx(totals["energy_chip_pj"])
    assert "hop_chip" not in by_event   # one chip: no link crossed, none priced


def test_budget_and_regression_gates(lif_export, report, tmp_path):
    energy_uj = report["totals"]["energy_chip_uj"]
    args = ("energy", lif_export, "--samples", SAMPLES)
    assert invoke(*args, "--budget-uj", energy_uj * 1.01).exit_code == 0
    over = invoke(*args, "--budget-uj", energy_uj * 0.99)
    assert over.exit_code == 1 and "exceeds the budget" in over.stderr
    saved = tmp_path / "baseline.json"
    result = invoke(*args, "--format", "json")
    saved.write_text(result.stdout)
    assert invoke(*args, "--baseline", saved, "--max-regression", 0).exit_code == 0
    cheaper = json.loads(saved.read_text())
    cheaper["totals"]["energy_chip_uj"] *= 0.9
    saved.write_text(json.dumps(cheaper))
    assert invoke(*args, "--baseline", saved, "--max-regression", 12).exit_code == 0
    regressed = invoke(*args, "--baseline", saved, "--max-regression", 5)
    assert regressed.exit_code == 1 and "energy per sample grew" in regressed.stderr


def test_markdown_and_plot(lif_export, tmp_path):
    result = invoke("energy", lif_export, "--samples", 10, "--format", "markdown", "--plot", tmp_path / "e.png")
    assert result.exit_code == 0
    assert "| layer |" in result.stdout and "| conv1 |" in result.stdout and "uJ" in result.stdout
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
