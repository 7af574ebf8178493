"""Bounded memory: the chunk size follows the network, and running in chunks changes nothing
(spikes, readout, fidelity, verify, energy, simulate) when the chunks do not divide the samples."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import netfactory
from snnc import energy, execute, ir, verify
from snnc.backends import cycle, export_inputs, run_on_backend
from snnc.compiler import compile_network
from snnc.data import InputSpec, open_inputs
from snnc.errors import InputError
from snnc.export_dir import FLOAT_DIR, ExportDir, write_manifest
from snnc.ir import Network, Node
from snnc.passes.mapping import write_artifacts as mapping_writer
from snnc.targets import load_target

LOIHI2 = load_target("loihi2")
SAMPLES = 7   # chunks of 3: 3 + 3 + 1


def _spec(**overrides):
    spec = netfactory.recipe("mnist_srif", input_shape=[1, 8, 8], T=3,
                             arch_params={"channels": [4, 8], "hidden": 16})
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def compiled():
    return compile_network(netfactory.random_network(_spec(), seed=3), LOIHI2)


@pytest.fixture(scope="module")
def export_dir(compiled, tmp_path_factory):
    """A small export on the digits (network, float network, target, mapping), written by hand."""
    root = tmp_path_factory.mktemp("export")
    written = [path.name for path in ir.save(compiled.fixed, root)]
    (root / FLOAT_DIR).mkdir()
    written += [f"{FLOAT_DIR}/{path.name}" for path in ir.save(compiled.folded, root / FLOAT_DIR)]
    (root / "target.yaml").write_bytes(Path(LOIHI2.source_path).read_bytes())
    written += ["target.yaml"] + mapping_writer(SimpleNamespace(fixed=compiled.fixed, target=LOIHI2), root, {})
    write_manifest(root, {"target": "loihi2", "network": compiled.fixed.name, "data": "digits"}, written)
    return root


@pytest.fixture
def small_chunks(monkeypatch):
    """Every chunk size from the network (reference, fidelity, verify, cycle) becomes 3 samples."""
    monkeypatch.setattr(execute, "samples_per_chunk", lambda net, budget=None: 3)
    monkeypatch.setattr(cycle, "samples_per_chunk", lambda plan, budget=None: 3)


def _inputs(net, count=SAMPLES):
    return open_inputs("digits", InputSpec.of(net), count)


def _same_traces(a, b):
    assert a.spikes.keys() == b.spikes.keys()
    for name in a.spikes:
        assert np.array_equal(a.spikes[name], b.spikes[name]), name
    assert np.array_equal(a.readout_steps, b.readout_steps) and np.array_equal(a.readout, b.readout)
    assert a.overflow == b.overflow
    for name in a.voltages:
        assert np.array_equal(a.voltages[name], b.voltages[name]), name


@pytest.mark.parametrize("which", ["folded", "fixed"])
def test_run_in_chunks_equals_one_chunk(compiled, which):
    net = getattr(compiled, which)
    inputs = _inputs(net)
    x = inputs.network_input(net, inputs.units())
    record = (net.output_node.name, net.spiking_nodes()[0].name)
    whole = execute.run(net, x, record_voltages=record, chunk=SAMPLES)
    _same_traces(whole, execute.run(net, x, record_voltages=record, chunk=3))
    # the chunks as a caller streams them (InputSet.chunks), put side by side
    parts = [execute.run(net, inputs.network_input(net, units), record_voltages=record)
             for _, units, _ in inputs.chunks(3)]
    assert [p.readout.shape[0] for p in parts] == [3, 3, 1]
    assert np.array_equal(np.concatenate([p.readout for p in parts]), whole.readout)
    for name in whole.spikes:
        assert np.array_equal(np.concatenate([p.spikes[name] for p in parts], axis=1), whole.spikes[name])


def test_run_frees_what_no_later_node_reads(compiled):
    net = compiled.fixed
    last = execute.last_uses(net)
    names = [node.name for node in net.nodes]
    for index, node in enumerate(net.nodes):
        readers = [i for i, other in enumerate(net.nodes) if node.name in other.inputs]
        assert last[node.name] == (max(readers) if readers else index), names[index]


def test_fidelity_in_chunks_equals_one_chunk(compiled, monkeypatch):
    inputs = _inputs(compiled.fixed)
    whole = verify.fidelity(compiled.folded, compiled.fixed, inputs)
    monkeypatch.setattr(execute, "samples_per_chunk", lambda net, budget=None: 3)
    seen = []
    chunked = verify.fidelity(compiled.folded, compiled.fixed, inputs, progress=lambda done, total: seen.append(done))
    assert seen == [3, 6, 7]
    assert chunked == whole
    assert whole["samples"] == SAMPLES and whole["quantized_accuracy"] is not None


def test_verify_in_chunks_equals_one_chunk(export_dir, small_chunks, tmp_path):
    seen = []
    chunked = verify.verify(export_dir, ["cycle"], samples=SAMPLES, save_input=tmp_path / "x.npz",
                            progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, SAMPLES), (6, SAMPLES), (7, SAMPLES)]
    assert chunked["equivalent"] and chunked["inputs"] == "digits" and chunked["samples"] == SAMPLES


def test_verify_report_does_not_depend_on_the_chunks(export_dir, monkeypatch, tmp_path):
    whole = verify.verify(export_dir, ["cycle"], samples=SAMPLES, save_input=tmp_path / "x.npz")
    monkeypatch.setattr(execute, "samples_per_chunk", lambda net, budget=None: 3)
    monkeypatch.setattr(cycle, "samples_per_chunk", lambda plan, budget=None: 3)
    assert verify.verify(export_dir, ["cycle"], samples=SAMPLES, save_input=tmp_path / "x.npz") == whole
    assert whole["mismatches"]["cycle"] == {"conv1": 0, "conv2": 0, "fc1": 0, "readout": 0}


def numbers(row: dict) -> dict:
    """A report row's figures, nested ones (energy by event) flattened: what pytest.approx compares."""
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        elif key != "layer" and value is not None:
            flat[key] = value
    return flat


def test_energy_in_chunks_equals_one_chunk(export_dir, monkeypatch):
    whole = energy.energy_report(export_dir, samples=SAMPLES)
    monkeypatch.setattr(cycle, "samples_per_chunk", lambda plan, budget=None: 3)
    chunked = energy.energy_report(export_dir, samples=SAMPLES)
    assert [row["layer"] for row in chunked["layers"]] == [row["layer"] for row in whole["layers"]]
    for a, b in zip(whole["layers"], chunked["layers"]):
        assert {k for k, v in a.items() if v is None} == {k for k, v in b.items() if v is None}
        assert numbers(b) == pytest.approx(numbers(a), rel=1e-12)
    assert numbers(chunked["totals"]) == pytest.approx(numbers(whole["totals"]), rel=1e-12)
    assert chunked["accuracy"] == whole["accuracy"]


def test_energy_firing_rates_are_the_spikes_over_all_chunks(export_dir, compiled, monkeypatch):
    """Independent: the reference's spikes over all samples at once, averaged by numpy."""
    monkeypatch.setattr(cycle, "samples_per_chunk", lambda plan, budget=None: 3)
    report = energy.energy_report(export_dir, samples=SAMPLES)
    net = compiled.fixed
    inputs = _inputs(net)
    spikes = execute.run(net, inputs.network_input(net, inputs.units()), chunk=SAMPLES).spikes
    for row in report["layers"]:
        if row["firing_rate"] is not None:
            assert row["firing_rate"] == pytest.approx(float(spikes[row["layer"]].mean()), rel=1e-12)
            assert row["spikes"] == pytest.approx(float(spikes[row["layer"]].sum()) / SAMPLES, rel=1e-12)


def test_energy_and_run_without_labels_have_no_accuracy(export_dir):
    report = energy.energy_report(export_dir, data="random:5:2")
    assert report["accuracy"] is None and report["samples"] == 5 and report["data"] == "random:5:2"
    assert "accuracy - (no labels)" in energy.format_table(report)
    result = run_on_backend(export_dir, "reference", data="random:4")
    assert result["accuracy"] is None and result["samples"] == 4


def test_simulate_in_chunks_equals_one_chunk(export_dir, monkeypatch):
    whole = cycle.simulate_outdir(export_dir, samples=SAMPLES)
    monkeypatch.setattr(cycle, "samples_per_chunk", lambda plan, budget=None: 3)
    chunked = cycle.simulate_outdir(export_dir, samples=SAMPLES)
    assert chunked["predictions"] == whole["predictions"] and chunked["accuracy"] == whole["accuracy"]
    assert chunked["counts"]["totals"] == whole["counts"]["totals"]
    assert chunked["latency_us_per_sample"] == pytest.approx(whole["latency_us_per_sample"], rel=1e-12)
    assert whole["samples"] == SAMPLES and whole["data"] == "digits"


def test_an_export_without_data_asks_for_data(export_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    manifest = ExportDir.open(copy).manifest
    files = list(manifest["files"])
    write_manifest(copy, {key: value for key, value in manifest.items()
                          if key not in ("files", "format", "format_version")} | {"data": None}, files)
    for call in (lambda: export_inputs(ExportDir.open(copy)),
                 lambda: verify.verify(copy, ["cycle"], save_input=tmp_path / "x.npz"),
                 lambda: energy.energy_report(copy), lambda: cycle.simulate_outdir(copy),
                 lambda: run_on_backend(copy, "reference")):
        with pytest.raises(InputError, match="made with --data none.*pass --data"):
            call()
    assert export_inputs(ExportDir.open(copy), "random:3").count == 3


def _hand_network():
    """input 1x4x4 -> conv 2x3x3 (padding 1, spiking) -> flatten -> readout 3 (integrator), T = 2."""
    def neuron(n, kind):
        return netfactory.integer_neuron(n, kind, 100)

    return Network(name="hand", T=2, readout="mean", nodes=[
        Node("input", "input", [], (1, 4, 4)),
        Node("conv", "conv2d", ["input"], (2, 4, 4), weight=np.ones((2, 1, 3, 3), np.int64),
             attrs={"stride": [1, 1], "padding": [1, 1]}, neuron=neuron(32, "spiking")),
        Node("flatten", "flatten", ["conv"], (32,)),
        Node("readout", "linear", ["flatten"], (3,), weight=np.ones((3, 32), np.int64), neuron=neuron(3, "integrator")),
    ], arithmetic=dict(LOIHI2.arithmetic, kind="fixed"), encoding={"scale": 1 / 255, "max": 255},
        metadata={"target": "loihi2"})


def test_bytes_per_sample_by_hand():
    # per step: the trace holds conv's 32 spikes (1 byte each). The peak is at conv: the input's 16
    # float64 values still held, im2col 1*3*3 x 4*4 = 144 values, conv's output and neuron outputs
    # 2 x 32: 8 * (16 + 144 + 64) = 1792 bytes. T = 2: 2 * (32 + 1792).
    net = _hand_network()
    assert execute.bytes_per_sample(net) == 2 * (32 + 1792)
    assert execute.samples_per_chunk(net, budget=10 * 3648 + 5) == 10


def test_samples_per_chunk_shrinks_as_the_network_grows():
    sizes = [([4, 8], 16), ([16, 32], 64), ([32, 64], 128), ([64, 128], 256)]
    nets = [netfactory.random_network(_spec(input_shape=[1, 28, 28], arch_params={"channels": c, "hidden": h}))
            for c, h in sizes]
    per_sample = [execute.bytes_per_sample(net) for net in nets]
    assert per_sample == sorted(per_sample) and len(set(per_sample)) == len(per_sample)
    budget = 64 * per_sample[1]
    chunks = [execute.samples_per_chunk(net, budget) for net in nets]
    assert chunks == sorted(chunks, reverse=True) and chunks[1] == 64 and chunks[0] > chunks[2]
    assert all(execute.samples_per_chunk(net, budget=1) == 1 for net in nets)
    assert execute.samples_per_chunk(nets[0], budget=1 << 60) == execute.MAX_CHUNK


def test_float32_only_where_every_partial_sum_stays_below_2_24():
    # conv: 9 taps x 255 (the largest pixel) x 1 = 2295; readout: 32 spikes x 1: both exact
    assert execute.float32_ops(_hand_network()) == {"conv", "readout"}
    heavy = _hand_network()
    heavy.node("conv").weight = np.full((2, 1, 3, 3), 7311, np.int64)     # 9 x 255 x 7311 = 16,778,745 > 2^24
    assert 9 * 255 * 7311 > 2 ** 24 > 9 * 255 * 7310
    assert execute.float32_ops(heavy) == {"readout"}
    heavy.node("conv").weight = np.full((2, 1, 3, 3), 7310, np.int64)
    assert execute.float32_ops(heavy) == {"conv", "readout"}
    averaged = _hand_network()   # an average pool makes fractions: float64 after it
    averaged.nodes[2:2] = [Node("pool", "avgpool", ["conv"], (2, 2, 2), attrs={"kernel": 2, "stride": 2})]
    averaged.nodes[3] = Node("flatten", "flatten", ["pool"], (8,))
    averaged.nodes[4].weight = np.ones((3, 8), np.int64)
    assert execute.float32_ops(averaged) == {"conv"}
    assert execute.float32_ops(netfactory.random_network(_spec())) == set()   # a float network


def test_float32_ops_give_float64s_integers(compiled, monkeypatch):
    net = compiled.fixed
    assert execute.float32_ops(net) == {"conv1", "conv2", "fc1", "readout"}
    inputs = _inputs(net)
    x = inputs.network_input(net, inputs.units())
    fast = execute.run(net, x, record_voltages=("conv1", "readout"))
    monkeypatch.setattr(execute, "float32_ops", lambda net: set())
    _same_traces(fast, execute.run(net, x, record_voltages=("conv1", "readout")))
