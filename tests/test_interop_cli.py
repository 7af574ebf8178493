"""Bring your own network: `snnc export` on a NIR graph and on a lava-dl netx file, then `verify`."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import netfactory
from snnc import compiler
from snnc.cli import main
from snnc.export_dir import ExportDir
from snnc.data import dataset_inputs


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.slow   # verify runs Lava
def test_netx_network_exports_and_verifies(tmp_path):
    out = tmp_path / "netx"
    result = invoke("export", netfactory.netx_file(tmp_path / "net.net"), "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["float_accuracy"] is None and "float/network.json" not in summary["files"]
    net = ExportDir.open(out).network
    assert net.T == 8 and net.arithmetic["fire_rule"] == ">" and net.encoding["kind"] == "spikes"
    report = invoke("verify", out, "--backends", "reference,onnx,cycle,lava", "--samples", 12, "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["equivalent"]
    inputs, _ = dataset_inputs(net, "mnist5k", 12)
    assert set(np.unique(inputs)) <= {0, 1} and inputs.sum() > 0


@pytest.mark.slow   # reads the export of a shipped checkpoint and exports again
def test_nir_graph_from_an_export_round_trips(lif_export, tmp_path):
    first = lif_export
    second = tmp_path / "from_nir"
    result = invoke("export", first / "network.nir", "-o", second, "--json")
    assert result.exit_code == 0, result.output
    a = ExportDir.open(first).network
    b = ExportDir.open(second).network
    for x, y in zip(a.nodes, b.nodes):
        assert x.name == y.name and (x.weight is None or np.array_equal(x.weight, y.weight))
        if x.spiking:
            assert np.array_equal(x.neuron.threshold, y.neuron.threshold)
    assert json.loads(result.stdout)["quantized_accuracy"] == pytest.approx(
        json.loads((first / "fidelity.json").read_text())["quantized_accuracy"])
    assert invoke("verify", second, "--backends", "onnx,cycle", "--samples", 20).exit_code == 0


def test_unsupported_source_nodes_are_named(tmp_path):
    import nir

    graph = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((3, 4))), nir.Delay(delay=np.ones(3)))
    path = tmp_path / "delay.nir"
    nir.write(path, graph)
    result = invoke("export", path, "-o", tmp_path / "out", "--T", 4)
    assert result.exit_code == 3 and "Delay" in result.stderr and "Traceback" not in result.output
