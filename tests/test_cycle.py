"""The cycle-level simulator: spike-exact against the integer reference, counts checked by hand and
by brute force, the time model, and the export entry point."""
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netfactory
from snnc import execute, ir
from snnc.backends import cycle, get_backend, reference
from snnc.compiler import compile_checkpoint, compile_network
from snnc.data import InputSpec, frames_set
from snnc.export_dir import ExportDir, write_manifest
from snnc.errors import InputError
from snnc.ir import Network, Node
from snnc.passes import mapping as mp
from snnc.passes.mapping import write_artifacts as mapping_writer
from snnc.targets import load_target

MODELS = Path(__file__).resolve().parent.parent / "models"
LOIHI1, LOIHI2 = load_target("loihi1"), load_target("loihi2")
TINY_RESNET19 = {"channels": [8, 16, 16], "blocks": [1, 1, 1], "hidden": 16}
TINY_SEW = {"channels": [8, 8, 16, 16], "blocks": [1, 1, 1, 1]}


def assert_exact(net, inputs, record=()):
    ref = reference.run(net, inputs, record_voltages=record)
    trace = cycle.run(net, inputs, record_voltages=record)
    assert ref.spikes.keys() == trace.spikes.keys()
    for name in ref.spikes:
        assert ref.spikes[name].dtype == trace.spikes[name].dtype
        assert np.array_equal(ref.spikes[name], trace.spikes[name]), \
            f"layer {name}: {(ref.spikes[name] != trace.spikes[name]).sum()} spikes differ"
    assert np.array_equal(ref.readout_steps, trace.readout_steps)
    assert np.array_equal(ref.readout, trace.readout)
    for name in record:
        assert np.array_equal(ref.voltages[name], trace.voltages[name])
    assert ref.overflow == trace.overflow
    return ref


# ------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("recipe,target", [("mnist_srif", LOIHI2), ("mnist_lif", LOIHI1), ("mnist_lif", LOIHI2)])
def test_random_mnist_networks_are_spike_exact(recipe, target):
    spec = netfactory.recipe(recipe)
    net = compile_network(netfactory.random_network(spec, seed=4), target).fixed
    inputs = execute.encode(net, netfactory.random_images(spec, 12, seed=1))
    ref = assert_exact(net, inputs, record=("conv2", "readout"))
    assert all(spikes.any() for spikes in ref.spikes.values())     # the comparison is not vacuous


@pytest.mark.parametrize("recipe,arch", [("resnet19", TINY_RESNET19), ("sew_resnet18", TINY_SEW)])
def test_residual_networks_are_spike_exact(recipe, arch):
    spec = netfactory.recipe(recipe, arch_params=arch, input_shape=[3, 16, 16])
    net = compile_network(netfactory.random_network(spec, seed=2), LOIHI2).fixed
    inputs = execute.encode(net, netfactory.random_images(spec, 4, seed=3))
    ref = assert_exact(net, inputs)
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0


def test_backend_registry_finds_the_simulator():
    assert get_backend("cycle").NAME == "cycle"


@pytest.mark.parametrize("name", ["mnist_lif", "mnist_srif"])
def test_shipped_checkpoints_are_spike_exact_on_mnist(name):
    path = MODELS / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"{path.name} has not been trained yet")
    from snnc.data import load_dataset

    compiled = compile_checkpoint(path, "loihi2")
    images = load_dataset("mnist5k").test_images[:24]
    assert_exact(compiled.fixed, execute.encode(compiled.fixed, images))


# --------------------------------------------------------------- hand-computed counts

def _tiny(target):
    """input (2 pixels) -> fc (2 spiking neurons, one per core) -> readout (1 neuron)."""
    def neuron(n, kind):
        return netfactory.integer_neuron(n, kind, 1000)

    return Network(name="tiny", T=3, readout="mean", nodes=[
        Node("input", "input", [], (2,)),
        Node("fc", "linear", ["input"], (2,), weight=np.array([[10, 0], [0, 10]]), neuron=neuron(2, "spiking")),
        Node("readout", "linear", ["fc"], (1,), weight=np.array([[1, 1]]), neuron=neuron(1, "integrator")),
    ], arithmetic=dict(target.arithmetic, kind="fixed"), encoding={"scale": 1 / 255, "max": 255},
        metadata={"target": target.name})


def test_hops_messages_and_time_on_a_hand_placed_network():
    target = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, neurons_per_core=1, cores=4,
                                                     mesh=[2, 2], tile=[1, 1]))
    net = _tiny(target)
    mapping = mp.map_to_cores(net, target)
    # serpentine over 1x1 tiles: fc0 (0,0), fc1 (0,1), readout (1,1); the input port is at (0,0)
    assert [c["position"] for c in mapping.cores] == [[0, 0], [0, 1], [1, 1]]
    inputs = execute.encode(net, np.array([[5, 0]]))           # pixel 0 drives fc0 above threshold
    trace, counts = cycle.simulate(net, mapping, target, inputs)
    assert_exact(net, inputs)
    assert trace.spikes["fc"][:, 0].tolist() == [[1, 0]] * 3
    host, fc, out = counts.layers["input"], counts.layers["fc"], counts.layers["readout"]
    # the host sends pixel 0 to both fc cores each step: one within its tile, one 1 hop east
    assert (host["spikes"], host["messages"], host["spike_within_tile"], host["spike_across_tiles"]) == (3, 6, 3, 3)
    assert (host["hop_east_west"], host["hop_north_south"]) == (3, 0)
    # fc0 at (0,0) sends to the readout at (1,1) each step: 1 hop east-west and 1 north-south
    assert (fc["spikes"], fc["messages"], fc["spike_within_tile"], fc["hop_east_west"], fc["hop_north_south"]) \
        == (3, 3, 0, 3, 3)
    assert (fc["synaptic_op"], out["synaptic_op"]) == (6, 3)
    # 5 chip steps (T + 2); fc works at steps 1-3, the readout at 2-4; idle steps count inactive
    assert (fc["neuron_update_active"], fc["neuron_update_inactive"]) == (6, 4)
    assert (out["neuron_update_active"], out["neuron_update_inactive"]) == (3, 2)
    # Time, by hand from targets/loihi2.yaml (time_ns): synaptic_op 3.5, neuron_update_active 8.4,
    # neuron_update_inactive 5.3, spike_within_tile 2.1, hop_east_west 4.1, hop_north_south 6.5,
    # barrier_min 113, barrier_max 465.
    assert {key: target.time_ns[key] for key in ("synaptic_op", "neuron_update_active", "neuron_update_inactive",
                                                 "spike_within_tile", "hop_east_west", "hop_north_south",
                                                 "barrier_min", "barrier_max")} == {
        "synaptic_op": 3.5, "neuron_update_active": 8.4, "neuron_update_inactive": 5.3, "spike_within_tile": 2.1,
        "hop_east_west": 4.1, "hop_north_south": 6.5, "barrier_min": 113.0, "barrier_max": 465.0}
    # The barrier grows linearly from barrier_min (1 tile) to barrier_max (the whole 2x2 mesh, 4 tiles);
    # 3 tiles are used: 113 + (465 - 113) * 2 / 3 = 113 + 234.666... = 347.666...
    barrier = 347.0 + 2 / 3
    assert counts.barrier_ns == pytest.approx(barrier)
    # Per step: the slowest core (synaptic ops, neuron updates) + the busiest sender's messages in
    # series + the barrier. The host's messages: within its tile 2.1 + one hop east 4.1 = 6.2;
    # fc0's: one hop east 4.1 + one north 6.5 = 10.6.
    #   step 0:     synaptic op 3.5 + inactive update 5.3 + host 6.2         = 15.0
    #   steps 1, 2: synaptic op 3.5 + active update 8.4 + max(6.2, 10.6)     = 22.5
    #   step 3:     synaptic op 3.5 + active update 8.4 + fc0 10.6           = 22.5
    #   step 4:     active update 8.4 (the readout)                          =  8.4
    work = [15.0, 22.5, 22.5, 22.5, 8.4]
    assert np.allclose(counts.step_ns[:, 0], np.array(work) + barrier)
    latency = 90.9 + 5 * barrier        # 15 + 3 * 22.5 + 8.4 = 90.9; 5 * 347.666... = 1738.333...
    report = counts.to_dict()
    assert report["time"]["latency_ns_mean"] == pytest.approx(latency)
    assert report["time"]["samples_per_second"] == pytest.approx(1e9 / latency)


# ------------------------------------------------------------------ brute-force counts

@pytest.fixture(scope="module", params=["static", "changing"])
def lif_run(request):
    """A small network on direct-encoded images (the same input at every step, which the simulator
    processes once) or on inputs that change from step to step."""
    spec = netfactory.recipe("mnist_lif", arch_params={"channels": [16, 32], "hidden": 64})
    net = compile_network(netfactory.random_network(spec, seed=7), LOIHI1).fixed
    inputs = execute.encode(net, netfactory.random_images(spec, 6, seed=8))
    if request.param == "changing":
        inputs = np.stack([execute.encode(net, netfactory.random_images(spec, 6, seed=9 + t))[0]
                           for t in range(net.T)])
        assert_exact(net, inputs, record=("conv1",))
    mapping = mp.map_to_cores(net, LOIHI1)
    trace, counts = cycle.simulate(net, mapping, LOIHI1, inputs, chunk=4)
    return net, inputs, mapping, trace, counts


def _taps(nonzero: torch.Tensor, cout: int) -> float:
    """Synapses driven: for every non-zero input element, the outputs whose 3x3 window holds it."""
    ones = torch.ones((cout, nonzero.shape[1], 3, 3), dtype=torch.float64)
    return float(F.conv2d(nonzero.to(torch.float64), ones, padding=1).sum())


def test_synaptic_ops_equal_a_brute_force_count(lif_run):
    net, inputs, mapping, trace, counts = lif_run
    T, B = inputs.shape[:2]
    x = torch.from_numpy(inputs).reshape(T * B, 1, 28, 28) != 0
    conv1 = torch.from_numpy(trace.spikes["conv1"]).reshape(T * B, 16, 28, 28).double()
    conv2 = torch.from_numpy(trace.spikes["conv2"]).reshape(T * B, 32, 14, 14).double()
    pooled1 = F.max_pool2d(conv1, 2) != 0
    pooled2 = F.max_pool2d(conv2, 2) != 0
    assert counts.layers["conv1"]["synaptic_op"] == _taps(x, 16)
    assert counts.layers["conv2"]["synaptic_op"] == _taps(pooled1, 32)
    assert counts.layers["fc1"]["synaptic_op"] == float(pooled2.sum()) * 64
    assert counts.layers["readout"]["synaptic_op"] == float(trace.spikes["fc1"].sum()) * 10
    assert counts.layers["input"]["spikes"] == float((inputs != 0).sum())
    for name in ("conv1", "conv2", "fc1"):
        assert counts.layers[name]["spikes"] == float(trace.spikes[name].sum())


def test_messages_and_hops_equal_a_brute_force_count(lif_run):
    # conv1 -> pool1 -> conv2: one message per (non-zero pooled value, conv2 core whose receptive
    # field holds it), from the conv1 core owning the 2x2 block to that conv2 core.
    net, inputs, mapping, trace, counts = lif_run
    tile = mapping.tile
    T, B = inputs.shape[:2]
    pooled = F.max_pool2d(torch.from_numpy(trace.spikes["conv1"]).reshape(T * B, 16, 28, 28).double(), 2) != 0
    per_element = pooled.sum(0).numpy().astype(np.int64)             # [16, 14, 14] messages per axon
    owner = np.zeros((16, 28, 28), np.int64)
    for core in mapping.cores:
        if core["layer"] == "conv1":
            (c0, c1), (y0, y1), (x0, x1) = core["channels"], core["rows"], core["cols"]
            owner[c0:c1, y0:y1, x0:x1] = core["id"]
    owner = owner[:, ::2, ::2]
    position = {core["id"]: core["position"] for core in mapping.cores}
    messages = within = ew = ns = 0
    for core in mapping.cores:
        if core["layer"] != "conv2":
            continue
        (y0, y1), (x0, x1) = core["rows"], core["cols"]
        window = np.zeros((14, 14), bool)
        window[max(0, y0 - 1):min(14, y1 + 1), max(0, x0 - 1):min(14, x1 + 1)] = True
        for c in range(16):
            for y, x in zip(*np.nonzero(window & (per_element[c] > 0))):
                n = per_element[c, y, x]
                e, s = mp.hops(position[owner[c, y, x]], core["position"], tile)
                messages += n
                within += n * (e == 0 and s == 0)
                ew, ns = ew + n * e, ns + n * s
    got = counts.layers["conv1"]
    assert (got["messages"], got["spike_within_tile"], got["hop_east_west"], got["hop_north_south"]) \
        == (messages, within, ew, ns)
    assert got["spike_across_tiles"] == messages - within


def test_per_core_counts_add_up(lif_run):
    net, inputs, mapping, trace, counts = lif_run
    T, B = inputs.shape[:2]
    steps = T + max(layer["depth"] for layer in mapping.layers)
    assert counts.steps == steps and counts.step_ns.shape == (steps, B)
    updates = counts.cores["neuron_update_active"] + counts.cores["neuron_update_inactive"]
    assert np.array_equal(updates, np.array([c["neurons"] for c in mapping.cores]) * steps * B)
    for layer in mapping.layers:
        cores = slice(layer["first_core"], layer["first_core"] + layer["cores"])
        assert counts.cores["synaptic_op"][cores].sum() == counts.layers[layer["name"]]["synaptic_op"]
        assert counts.cores["messages_sent"][cores].sum() == counts.layers[layer["name"]]["messages"]
    assert counts.cores["input_port_messages"].sum() == counts.layers["input"]["messages"]
    assert (counts.step_ns >= counts.barrier_ns).all()
    energy = cycle.energy_counts(counts)
    assert set(energy["conv2"]) - {"hop_chip"} <= set(LOIHI1.energy_pj)
    assert energy["conv2"]["hop_chip"] == 0   # one chip: no chip-to-chip link to price
    assert energy["conv2"]["synaptic_op"] == counts.layers["conv2"]["synaptic_op"] / B
    json.dumps(counts.to_dict())


def test_chunking_does_not_change_anything(lif_run):
    net, inputs, mapping, trace, counts = lif_run
    other, other_counts = cycle.simulate(net, mapping, LOIHI1, inputs, chunk=5)
    assert all(np.array_equal(trace.spikes[k], other.spikes[k]) for k in trace.spikes)
    assert other_counts.layers == counts.layers
    assert np.allclose(other_counts.step_ns, counts.step_ns)


# ------------------------------------------------------------------------------ export

def test_simulate_export_reports_accuracy_counts_and_time(tmp_path):
    spec = netfactory.recipe("mnist_srif")
    net = compile_network(netfactory.random_network(spec, seed=5), LOIHI2).fixed
    written = [path.name for path in ir.save(net, tmp_path)]
    (tmp_path / "target.yaml").write_bytes(Path(LOIHI2.source_path).read_bytes())
    compiled = SimpleNamespace(fixed=net, target=LOIHI2)
    written += ["target.yaml"] + mapping_writer(compiled, tmp_path, {})
    write_manifest(tmp_path, {"target": "loihi2", "network": net.name}, written)
    images = netfactory.random_images(spec, 10, seed=6)
    labels = np.arange(10) % 10
    inputs = frames_set("test", InputSpec.of(net), 6, labels[:6], lambda start, stop: images[start:stop])
    report = cycle.simulate_export(ExportDir.open(tmp_path), inputs)
    ref = reference.run(net, execute.encode(net, images[:6]))
    assert report["samples"] == 6 and report["predictions"] == ref.predictions.tolist()
    assert report["accuracy"] == pytest.approx(float((ref.predictions == labels[:6]).mean()))
    unlabelled = cycle.simulate_outdir(tmp_path, "random:5:3")
    assert unlabelled["accuracy"] is None and unlabelled["samples"] == 5 and unlabelled["data"] == "random:5:3"
    with pytest.raises(InputError, match="pass --data"):   # the manifest names no data
        cycle.simulate_outdir(tmp_path)
    assert report["chip_samples_per_second"] == pytest.approx(1e6 / report["latency_us_per_sample"])
    assert set(report["energy_counts_per_sample"]) == {"input", "conv1", "conv2", "fc1", "readout"}
    json.dumps(report)


def test_a_mapping_of_another_network_is_refused():
    spec = netfactory.recipe("mnist_lif")
    net = compile_network(netfactory.random_network(spec), LOIHI2).fixed
    other = compile_network(netfactory.random_network(netfactory.recipe("mnist_lif", arch_params={
        "channels": [8, 16], "hidden": 32})), LOIHI2).fixed
    with pytest.raises(InputError, match="does not describe"):
        cycle.simulate(net, mp.map_to_cores(other, LOIHI2), LOIHI2,
                       execute.encode(net, netfactory.random_images(spec, 1)))


@pytest.mark.parametrize("shape, kernel", [((3, 4, 28, 28), 2), ((2, 3, 5, 6), 2), ((2, 3, 6, 7), 2),
                                           ((2, 2, 9, 9), 3)])
def test_sum_pools_equal_torchs_on_spikes_and_on_integers(shape, kernel):
    """The simulator's pools (uint8 spikes two at a time as uint16 words when the width allows,
    any integers otherwise) against avg_pool2d(divisor_override=1), odd sizes included."""
    rng = np.random.default_rng(0)
    for values in (rng.random(shape) < 0.5, rng.integers(-50, 50, shape)):
        x = torch.from_numpy(values.astype(np.uint8 if values.dtype == bool else np.float32))
        expected = F.avg_pool2d(x.to(torch.float64), kernel, kernel, divisor_override=1)
        assert torch.equal(cycle._sum_pool(x, kernel, torch.float64), expected)
