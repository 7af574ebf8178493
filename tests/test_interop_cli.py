"""Bring your own network: `snnc export` on a NIR graph and on a lava-dl netx file, then `verify`."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from snnc import compiler
from snnc.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _netx_file(path):
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


@pytest.mark.slow   # verify runs Lava
def test_netx_network_exports_and_verifies(tmp_path):
    out = tmp_path / "netx"
    result = invoke("export", _netx_file(tmp_path / "net.net"), "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["float_accuracy"] is None and "float/network.json" not in summary["files"]
    net, _ = compiler.load_export(out)
    assert net.T == 8 and net.arithmetic["fire_rule"] == ">" and net.encoding["kind"] == "spikes"
    report = invoke("verify", out, "--backends", "reference,onnx,cycle,lava", "--samples", 12, "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["equivalent"]
    inputs, _ = compiler.test_inputs(net, "mnist5k", 12)
    assert set(np.unique(inputs)) <= {0, 1} and inputs.sum() > 0


@pytest.mark.slow   # reads the export of a shipped checkpoint and exports again
def test_nir_graph_from_an_export_round_trips(lif_export, tmp_path):
    first = lif_export
    second = tmp_path / "from_nir"
    result = invoke("export", first / "network.nir", "-o", second, "--json")
    assert result.exit_code == 0, result.output
    a, _ = compiler.load_export(first)
    b, _ = compiler.load_export(second)
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
