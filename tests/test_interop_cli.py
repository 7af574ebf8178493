"""Bring your own network: `snnc export` on a NIR graph and on a lava-dl netx file, then `verify`.

The network's input is the source's own (the NIR Input node, the netx input layer or first dense
layer); data of another layout reaches it by the layout rule (docs/data.md, 'Shapes')."""
import json

import nir
import numpy as np
import pytest

import netfactory
from clicheck import assert_clean_failure, invoke
from snnc import compiler, execute
from snnc.data import InputSpec, open_inputs
from snnc.errors import InputError
from snnc.export_dir import ExportDir

INPUT = 3
ALL_BACKENDS = "reference,onnx,onnx-step,cycle,lava"


def verify_on(out, data, samples, backends, tmp_path):
    """`snnc verify` of the export on the first `samples` of `data`, opened for the export's own
    input and replayed as the saved units (the --input file that verify writes for a divergence)."""
    net = ExportDir.open(out).network
    units = open_inputs(data, InputSpec.of(net), samples).units()
    path = tmp_path / "units.npz"
    np.savez(path, inputs=units)
    result = invoke("verify", out, "--backends", backends, "--input", path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["equivalent"] and report["samples"] == samples
    assert report["backends"] == ["reference"] + [b for b in backends.split(",") if b != "reference"]
    return units


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def netx_without_input_layer(path):
    """lava-dl's netx MNIST layout without its input layer: the first dense layer takes 784 inputs."""
    import h5py

    netfactory.netx_file(path)
    with h5py.File(path, "a") as handle:
        layers = handle["layer"]
        del layers["0"]
        layers.move("1", "0")
        layers.move("2", "1")
    return path


@pytest.mark.slow   # verify runs Lava
def test_netx_network_exports_and_verifies(tmp_path):
    out = tmp_path / "netx"
    result = invoke("export", netfactory.netx_file(tmp_path / "net.net"), "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["float_accuracy"] is None and "float/network.json" not in summary["files"]
    assert summary["data"] == "mnist5k" and summary["samples"] == 1000
    net = ExportDir.open(out).network
    assert net.T == 8 and net.arithmetic["fire_rule"] == ">" and net.encoding["kind"] == "spikes"
    assert net.input_node.shape == (784,) and manifest(out)["input"]["shape"] == ["T", "batch", 784]
    units = verify_on(out, "mnist5k", 12, ALL_BACKENDS, tmp_path)
    assert set(np.unique(units)) <= {0, 1} and units.sum() > 0


def test_netx_network_without_input_layer_takes_its_first_dense_layers_width(tmp_path):
    """The observed failure: 1x28x28 digits fed to a first dense layer of 784 inputs."""
    out = tmp_path / "netx"
    result = invoke("export", netx_without_input_layer(tmp_path / "net.net"), "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"] == "mnist5k"
    assert ExportDir.open(out).network.input_node.shape == (784,)
    verify_on(out, "mnist5k", 6, "reference,onnx,cycle", tmp_path)


def _dense_nir(path):
    """A 784-input NIR graph (what snnTorch writes for an MLP): affine 16 -> IF -> affine 10 -> LI;
    the IF's r = 1/dt (dt 1e-3) makes its input gain 1."""
    rng = np.random.default_rng(0)
    graph = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([784])}),
        nir.Affine(weight=rng.normal(0, 0.3, (16, 784)), bias=np.zeros(16)),
        nir.IF(r=np.full(16, 1e3), v_threshold=np.ones(16)),
        nir.Affine(weight=rng.normal(0, 2, (10, 16)), bias=np.zeros(10)),
        nir.LI(tau=np.full(10, 2e-3), r=np.ones(10), v_leak=np.zeros(10)),
        nir.Output(output_type={"output": np.array([10])}))
    nir.write(str(path), graph)
    return path


@pytest.mark.slow   # verify runs Lava
def test_nir_graph_with_a_flat_input_runs_on_every_backend(tmp_path):
    out = tmp_path / "nir"
    result = invoke("export", _dense_nir(tmp_path / "dense.nir"), "-o", out, "--T", 4, "--dt", 1e-3, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["quantized_accuracy"] is not None   # the 1000 mnist5k test digits
    net = ExportDir.open(out).network
    assert net.input_node.shape == (784,)
    units = verify_on(out, "mnist5k", 8, ALL_BACKENDS, tmp_path)
    assert 0 < execute.run(net, units).spikes["affine"].mean() < 1      # the hidden layer is not silent


def _nmnist_nir(path):
    """An N-MNIST-shaped NIR graph: Input 2x34x34 -> conv 4 (stride 2) -> IF -> flatten -> affine 10 -> LI."""
    rng = np.random.default_rng(1)
    graph = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([2, 34, 34])}),
        nir.Conv2d(input_shape=(34, 34), weight=rng.normal(0, 0.5, (4, 2, 3, 3)), stride=2, padding=1,
                   dilation=1, groups=1, bias=np.zeros(4)),
        nir.IF(r=np.ones((4, 17, 17)), v_threshold=np.ones((4, 17, 17))),
        nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([4, 17, 17])}),
        nir.Affine(weight=rng.normal(0, 0.5, (10, 4 * 17 * 17)), bias=np.zeros(10)),
        nir.LI(tau=np.full(10, 2e-3), r=np.ones(10), v_leak=np.zeros(10)),
        nir.Output(output_type={"output": np.array([10])}))
    nir.write(str(path), graph)
    return path


@pytest.fixture(scope="module")
def nmnist(tmp_path_factory):
    return _nmnist_nir(tmp_path_factory.mktemp("nmnist") / "nmnist.nir")


def test_nir_input_that_fits_no_built_in_data_is_exported_on_random_inputs(tmp_path, nmnist):
    out = tmp_path / "random"
    result = invoke("export", nmnist, "-o", out, "--T", 4, "--dt", 1e-3, "--input-scale", 1, "--data", "random:6",
                    "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["float_accuracy"] is None and summary["quantized_accuracy"] is None   # no labels
    assert 0 <= summary["prediction_agreement"] <= 1 and summary["samples"] == 6
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert fidelity["measured"] and fidelity["data"] == "random:6:0"
    assert manifest(out)["data"] == "random:6:0"
    assert manifest(out)["input"]["shape"] == ["T", "batch", 2, 34, 34]
    verify_on(out, "random:4:1", 4, "reference,onnx,cycle", tmp_path)


def test_nir_input_that_fits_no_built_in_data_exports_without_data(tmp_path, nmnist):
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_clean_failure(invoke("export", nmnist, "-o", tmp_path / "out", "--T", 4, "--dt", 1e-3), INPUT,
                         "the network's input [2, 34, 34] fits no built-in data set",
                         "--data FILE, --data random or --data none")
    assert_clean_failure(invoke("export", nmnist, "-o", tmp_path / "out", "--T", 4, "--dt", 1e-3,
                                "--data", "mnist5k"), INPUT, "[1, 28, 28]", "[2, 34, 34]")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    out = tmp_path / "none"
    result = invoke("export", nmnist, "-o", out, "--T", 4, "--dt", 1e-3, "--data", "none")
    assert result.exit_code == 0, result.output
    assert "no fidelity measured" in result.output
    assert json.loads((out / "fidelity.json").read_text())["measured"] is False
    assert manifest(out)["data"] is None
    assert {"network.json", "model.onnx", "mapping.json", "lava/graph.json", "network.nir"} <= set(manifest(out)["files"])


def test_the_source_says_the_input_and_the_default_data_follows_it(tmp_path, nmnist):
    """default_data: a checkpoint's training data, else the first built-in the input fits."""
    def default_for(path, **options):
        source = compiler.read_source(path, "loihi2", options)
        return compiler.default_data(source.network, source.data)

    assert default_for(_dense_nir(tmp_path / "dense.nir"), T=4, dt=1e-3) == "mnist5k"        # 784 by the layout rule
    assert default_for(netx_without_input_layer(tmp_path / "net.net")) == "mnist5k"
    with pytest.raises(InputError, match=r"\[2, 34, 34\] fits no built-in data set"):
        default_for(nmnist, T=4, dt=1e-3)


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
    graph = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((3, 4))), nir.Delay(delay=np.ones(3)))
    path = tmp_path / "delay.nir"
    nir.write(path, graph)
    result = invoke("export", path, "-o", tmp_path / "out", "--T", 4)
    assert result.exit_code == 3 and "Delay" in result.stderr and "Traceback" not in result.output


def test_nir_semantics_assumptions_are_printed_and_recorded(tmp_path):
    """A producer profile whose reset the graph does not record: one warning line naming the
    option, and the manifest says what was used; stating the choice silences the warning."""
    source = _dense_nir(tmp_path / "dense.nir")
    result = invoke("export", source, "-o", tmp_path / "assumed", "--T", 4, "--data", "none",
                    "--nir-semantics", "spikingjelly", "--dt", 1e-3)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "reset" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "--nir-assume reset=subtract" in warnings[0]
    record = manifest(tmp_path / "assumed")["source_semantics"]
    assert (record["profile"], record["source"], record["reset"], record["fire_rule"]) == \
        ("spikingjelly", "given", "zero", ">=")
    assert record["assumed"] == {"reset": "zero"}
    assert any("v >= threshold" in rule for rule in record["rules"])
    result = invoke("export", source, "-o", tmp_path / "stated", "--T", 4, "--data", "none",
                    "--nir-semantics", "spikingjelly", "--nir-assume", "reset=subtract", "--dt", 1e-3)
    assert result.exit_code == 0 and "reset" not in result.stderr, result.output
    record = manifest(tmp_path / "stated")["source_semantics"]
    assert record["reset"] == "subtract" and record["assumed"] == {}
    assert ExportDir.open(tmp_path / "stated").network.node("affine").neuron.reset == "soft"


@pytest.mark.parametrize("args, code, fragment", [
    (("--nir-assume", "reset"), 2, "is not KEY=VALUE"),
    (("--nir-assume", "spikes=many"), 3, "--nir-assume spikes=many is not understood"),
    (("--nir-semantics", "brian2"), 3, "is not one of nir, snntorch"),
])
def test_bad_nir_semantics_options_are_one_line_errors(tmp_path, args, code, fragment):
    result = invoke("export", _dense_nir(tmp_path / "dense.nir"), "-o", tmp_path / "out", "--T", 4, *args)
    if code == 2:   # click's usage errors print the usage line too
        assert result.exit_code == 2 and fragment in result.stderr and "Traceback" not in result.output
    else:
        assert_clean_failure(result, code, fragment)
    assert not (tmp_path / "out").exists()


def test_nir_semantics_on_a_checkpoint_is_a_usage_error(tmp_path):
    result = invoke("export", "models/mnist_lif.pt", "-o", tmp_path / "out", "--nir-semantics", "snntorch")
    assert_clean_failure(result, 2, "--nir-semantics and --nir-assume apply only to a NIR graph")


@pytest.mark.slow   # verify runs Lava
def test_recurrent_snntorch_graph_verifies_on_every_backend(tmp_path):
    """snnTorch's RLeaky (a recurrent subgraph), exported by snnTorch, imported with its semantics:
    every backend runs the recurrent synapses spike for spike."""
    import producer_nets as nets

    source = tmp_path / "rleaky.nir"
    nets.PRODUCERS["snntorch"].export(nets.build("snntorch", "dense", "rleaky"), source, nets.input_shape("dense"))
    out = tmp_path / "out"
    result = invoke("export", source, "-o", out, "--T", 16, "--nir-semantics", "snntorch", "--data", "none")
    assert result.exit_code == 0, result.output
    assert any(node.recurrent is not None for node in ExportDir.open(out).network.nodes)
    verify_on(out, "mnist5k", 6, ALL_BACKENDS, tmp_path)


@pytest.mark.slow   # verify runs Lava
def test_nir_delays_verify_on_every_backend(tmp_path):
    rng = np.random.default_rng(3)
    n = 12
    nodes = {"in": nir.Input(input_type=np.array([784])),
             "fc": nir.Affine(weight=rng.normal(0, 0.3, (n, 784)), bias=np.zeros(n)),
             "a": nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "d": nir.Delay(delay=rng.integers(0, 6, n).astype(float)),
             "fc2": nir.Affine(weight=rng.normal(0, 2, (10, n)), bias=np.zeros(10)),
             "li": nir.LI(tau=np.full(10, 4.0), r=np.ones(10), v_leak=np.zeros(10)),
             "out": nir.Output(output_type=np.array([10]))}
    edges = [("in", "fc"), ("fc", "a"), ("a", "d"), ("d", "fc2"), ("fc2", "li"), ("li", "out")]
    source = tmp_path / "delays.nir"
    nir.write(str(source), nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    out = tmp_path / "out"
    result = invoke("export", source, "-o", out, "--T", 12, "--dt", 1, "--nir-semantics", "nir", "--data", "none")
    assert result.exit_code == 0, result.output
    assert ExportDir.open(out).network.node("fc2").delay.max() > 0
    verify_on(out, "mnist5k", 6, ALL_BACKENDS, tmp_path)


def _sinabs_multispike_graph(path):
    """Sinabs' default IAF (MultiSpike, MembraneSubtract), exported by Sinabs."""
    import producer_nets as nets

    nets.PRODUCERS["sinabs"].export(nets.build("sinabs", "dense", "iaf-multi"), path, nets.input_shape("dense"))
    return path


@pytest.mark.slow   # verify runs Lava
def test_sinabs_multispike_graph_verifies_on_every_backend(tmp_path):
    source = _sinabs_multispike_graph(tmp_path / "multi.nir")
    out = tmp_path / "out"
    result = invoke("export", source, "-o", out, "--T", 16, "--nir-semantics", "sinabs", "--data", "none")
    assert result.exit_code == 0, result.output
    assert "several spikes per step (MultiSpike, its default" in result.stderr
    net = ExportDir.open(out).network
    assert max(node.neuron.max_spikes for node in net.spiking_nodes()) > 1
    units = verify_on(out, "mnist5k", 6, ALL_BACKENDS, tmp_path)
    assert max(s.max() for s in execute.run(net, units).spikes.values()) > 1   # counts, not only spikes


def test_multispike_graph_on_a_binary_spike_target_is_a_design_rule_error(tmp_path):
    source = _sinabs_multispike_graph(tmp_path / "multi.nir")
    result = invoke("export", source, "-o", tmp_path / "out", "--T", 16, "--nir-semantics", "sinabs",
                    "--nir-assume", "reset=zero", "--data", "none", "--target", "loihi1")   # loihi1 resets to zero
    assert result.exit_code == 5 and "loihi1 sends binary spikes only" in result.stderr, result.output
    assert not (tmp_path / "out").exists()
