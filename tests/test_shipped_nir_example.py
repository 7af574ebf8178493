"""The shipped snnTorch example (models/snntorch_mnist): a network trained and exported by snnTorch,
read by snnc with semantics 'snntorch', and its own digits file through every backend."""
import json
from pathlib import Path

import nir
import numpy as np
import pytest
import snntorch as snn
import torch

import producer_nets
from clicheck import invoke
from snnc import execute
from snnc.frontends.nir_frontend import load_nir

EXAMPLE = Path(__file__).resolve().parent.parent / "models" / "snntorch_mnist"
GRAPH, DIGITS = EXAMPLE / "mnist_leaky.nir", EXAMPLE / "digits.npz"
T, SAMPLES = 16, 16
NEURONS = ("2", "4")   # the NIR keys of the hidden and output Leaky layers


def snntorch_from_graph(graph: nir.NIRGraph) -> torch.nn.Sequential:
    """The network rebuilt as snnTorch modules from the file's arrays, with snnTorch's default
    Leaky (subtractive reset, one step late) as it was trained. snnTorch's exporter writes
    r = tau/dt = 1/(1 - beta); snnTorch's own import_from_nir would build a zero-reset Leaky instead."""
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for key in ("1", "2", "3", "4"):
        node = graph.nodes[key]
        if isinstance(node, nir.Affine):
            linear = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(node.weight))
                linear.bias.copy_(torch.from_numpy(node.bias))
            layers.append(linear)
        else:
            beta = 1.0 - 1.0 / torch.from_numpy(node.r.astype(np.float64))
            layers.append(snn.Leaky(beta=beta, threshold=torch.from_numpy(node.v_threshold.astype(np.float64)),
                                    init_hidden=True, output=key == NEURONS[-1]))
    return torch.nn.Sequential(*layers).double()


def test_float_import_spikes_like_snntorch():
    images = np.load(DIGITS)["inputs"][:SAMPLES]
    net = load_nir(GRAPH, T=T, semantics="snntorch")
    trace = execute.run(net, execute.encode(net, images))
    x = torch.from_numpy(images.astype(np.float64) / 255.0)
    reference = producer_nets.snntorch_simulate(snntorch_from_graph(nir.read(str(GRAPH))), x, T)
    populations = net.metadata["nir"]["populations"]
    for key in NEURONS:
        assert 0.02 < reference[key].mean() < 0.6, key          # the comparison is not vacuous
        np.testing.assert_array_equal(trace.spikes[populations[key]], reference[key], err_msg=key)


@pytest.mark.slow   # export and verify on every backend, Lava included
def test_cli_exports_and_verifies_on_every_backend(tmp_path):
    out = tmp_path / "ex"
    result = invoke("export", GRAPH, "--nir-semantics", "snntorch", "--T", T, "--data", DIGITS,
                    "-o", out, "--target", "loihi2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["float_accuracy"] > 0.9 and summary["quantized_accuracy"] > 0.9
    backends = "reference,onnx,onnx-step,lava,cycle"
    result = invoke("verify", out, "--backends", backends, "--data", DIGITS, "--samples", 50, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["equivalent"] and report["samples"] == 50
    assert report["backends"] == backends.split(",")
