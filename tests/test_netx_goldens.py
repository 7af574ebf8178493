"""lava-dl's own netx networks against lava-dl's own golden files (lava-dl 0.6.0's wheel,
tests/lava/lib/dl/netx/gts; docs/interop.md, "lava-dl's golden files").

Each golden file has its own clock, fixed here once per file and measured, not fitted per layer:
tinynet and ntidigits come from slayer (every block's output a step late: tinynet's layers are one
step behind snnc's logical time, ntidigits' output four), dense from a Lava Dense block (one step of
synaptic latency), pilotnet_lif from Loihi hardware run with a 17-step reset interval and each layer
reset one step after the one before it (layer k at chip step t is snnc's logical step (t - k) mod 17;
the hardware reports v = 128 for a neuron that spiked, whose register snnc, like Lava, holds at 0).
"""
import json

import h5py
import netfactory
import numpy as np
import pytest
import yaml
from clicheck import invoke
from lavadl import NETX_TESTS

from snnc import execute
from snnc.backends import cycle, lava_backend
from snnc.backends.lava_backend import from_lava
from snnc.frontends.netx import load_netx
from snnc.passes.mapping import map_to_cores
from snnc.targets import TARGETS_DIR, load_target

GOLDEN = NETX_TESTS / "gts"
HARDWARE_SPIKE_MARK = 128   # what pilotnet_lif's recordings hold as v for a neuron that spiked


def _steps_first(golden: np.ndarray, shape) -> np.ndarray:
    """A golden array in Lava's (x, y, c) order with time last -> [T, *shape] in snnc's order."""
    steps = np.moveaxis(np.asarray(golden), -1, 0)
    return from_lava(steps.reshape(steps.shape[0], -1), shape).astype(np.int64)


def _slayer_steps(golden: np.ndarray) -> np.ndarray:
    """slayer's [C, H, W, T] (or [N, T]) -> [T, C, H, W]."""
    return np.moveaxis(np.asarray(golden), -1, 0).astype(np.int64)


def _assert_equal(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    wrong = np.argwhere(got != expected)
    assert wrong.size == 0, f"{name}: {len(wrong)} of {expected.size} values differ, first at {wrong[0].tolist()}"


# --- tinynet: tiny.net (bias-driven input neurons, two strided convs) --------------------------

def _tinynet():
    net = load_netx(NETX_TESTS / "tiny.net", T=16)
    bias = np.load(GOLDEN / "tinynet" / "input_bias.npy").transpose(2, 1, 0).astype(np.int64)   # (x, y, c)
    return net, np.broadcast_to(bias, (net.T, 1) + bias.shape)


@pytest.mark.parametrize("backend", ["reference", "cycle", "lava"])
def test_tinynet_every_layer_and_current(backend):
    net, inputs = _tinynet()
    assert [node.name for node in net.spiking_nodes()] == ["input_neurons", "conv1", "conv2"]
    run = {"reference": execute.run, "cycle": cycle.run, "lava": lava_backend.run}[backend]
    trace = run(net, inputs, record_voltages=("conv1",))
    goldens = {"input_neurons": "input.npy", "conv1": "layer1.npy", "conv2": "output.npy"}
    for name, file in goldens.items():   # slayer's layers trail snnc's logical time by one step
        golden = _slayer_steps(np.load(GOLDEN / "tinynet" / file)[0])
        _assert_equal(name, trace.spikes[name][:-1, 0], golden[1:])
    if backend != "lava":
        current = _slayer_steps(np.load(GOLDEN / "tinynet" / "current.npy")[0]) * 64   # slayer's u / 64
        _assert_equal("conv1 u", trace.currents["conv1"][:-1, 0], current[1:])


# --- dense: a Dense block as lava-dl's own block test builds it -----------------------------------

def _dense_file(path):
    """gts/dense's layer as lava-dl's slayer writes a netx file: 200 inputs -> 256 CUBA neurons
    (iDecay 4096, vDecay 415, vThMant 6, as lava-dl's test_blocks drives the golden)."""
    weight = np.load(GOLDEN / "dense" / "weight.npy")
    with h5py.File(path, "w") as handle:
        layers = handle.create_group("layer")
        for index, (kind, shape) in enumerate([("input", [200]), ("dense", [256])]):
            group = layers.create_group(str(index))
            group.create_dataset("type", (1,), "S10", [kind.encode()])
            group.create_dataset("shape", data=np.array(shape))
        dense = layers["1"]
        dense.create_dataset("inFeatures", data=200)
        dense.create_dataset("outFeatures", data=256)
        dense.create_dataset("weight", data=weight.astype(np.float32))
        neuron = dense.create_group("neuron")
        for key, value in {"type": "CUBA", "iDecay": 4096, "vDecay": 415, "vThMant": 6, "refDelay": 1,
                           "gradedSpike": False}.items():
            neuron.create_dataset(key, data=value)
        simulation = handle.create_group("simulation")
        simulation.create_dataset("Ts", data=1)
        simulation.create_dataset("tSample", data=2000)
    return path


@pytest.mark.parametrize("backend", ["reference", "cycle", "lava"])
def test_dense_block_golden(tmp_path, backend):
    net = load_netx(_dense_file(tmp_path / "dense.net"))
    inputs = np.load(GOLDEN / "dense" / "in.npy").T[:, None, :].astype(np.int64)
    run = {"reference": execute.run, "cycle": cycle.run, "lava": lava_backend.run}[backend]
    trace = run(net, inputs, record_voltages=("dense1",))
    golden = np.load(GOLDEN / "dense" / "out.npy").T.astype(np.int64)   # Lava's Dense: one step later
    _assert_equal("dense1", trace.spikes["dense1"][:-1, 0], golden[1:])
    if backend != "lava":
        current = np.load(GOLDEN / "dense" / "current.npy").T.astype(np.int64) * 64
        _assert_equal("dense1 u", trace.currents["dense1"][:-1, 0], current[1:])


# --- pilotnet_lif: every layer, every step, spikes, u and v ------------------------------------

def _four_chip_mesh(tmp_path):
    """loihi2's cores on a 16 x 32 mesh (four chips' worth as one mesh): PilotNet needs 359 cores,
    and multi-chip systems are the scale issue's; the arithmetic is loihi2's own."""
    doc = yaml.safe_load((TARGETS_DIR / "loihi2.yaml").read_text())
    doc["name"] = "loihi2-four-chip-mesh"
    doc["limits"].update(cores=512, mesh=[16, 32])
    path = tmp_path / "loihi2-four-chip-mesh.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_target(str(path))


PILOTNET_FILES = ["input"] + [f"conv-{i}" for i in range(5)] + [f"fc-{i}" for i in range(3)]
PILOTNET_PERIOD = 17


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", "cycle"])
def test_pilotnet_lif_every_layer_every_step(tmp_path, backend):
    folder = GOLDEN / "pilotnet_lif"
    target = _four_chip_mesh(tmp_path)
    net = load_netx(folder / "network.net", T=PILOTNET_PERIOD, target=target)
    image = np.load(folder / "image.npy").transpose(2, 1, 0).astype(np.int64)   # bias mantissas, (x, y, c)
    spiking = [node.name for node in net.spiking_nodes()][:len(PILOTNET_FILES)]
    inputs = np.broadcast_to(image, (net.T, 1) + image.shape)
    if backend == "cycle":
        trace, _ = cycle.simulate(net, map_to_cores(net, target), target, inputs, record_voltages=tuple(spiking))
    else:
        trace = execute.run(net, inputs, record_voltages=tuple(spiking))
    for depth, (name, file) in enumerate(zip(spiking, PILOTNET_FILES)):
        shape = net.node(name).shape
        spikes = _steps_first(np.load(folder / f"{file}.npy"), shape)
        chip_steps = np.arange(depth, spikes.shape[0])   # before its first reset a layer holds no sample
        logical = (chip_steps - depth) % PILOTNET_PERIOD
        fired = trace.spikes[name][logical, 0]
        _assert_equal(f"{name} spikes", fired, spikes[chip_steps])
        if depth == 0:
            continue    # the recordings hold no u or v of the input neurons
        voltage = np.where(fired > 0, HARDWARE_SPIKE_MARK, trace.voltages[name][logical, 0])
        _assert_equal(f"{name} v", voltage, _steps_first(np.load(folder / f"{file}-v.npy"), shape)[chip_steps])
        _assert_equal(f"{name} u", trace.currents[name][logical, 0],
                      _steps_first(np.load(folder / f"{file}-u.npy"), shape)[chip_steps])


def test_pilotnet_lif_output_neuron_before_its_first_reset():
    """gts/pilotnet_lif/fc-3-*: the output neuron over 25 steps of another run, whose layers reset
    on a schedule snnc's timings do not hold; until its first reset (chip step 8) the chip runs
    free, and its u and v are snnc's free-running reading, step for step."""
    folder = GOLDEN / "pilotnet_lif"
    net = load_netx(folder / "network.net", T=8, timing="free-running")
    image = np.load(folder / "image.npy").transpose(2, 1, 0).astype(np.int64)
    output = [node.name for node in net.spiking_nodes()][-1]
    trace = execute.run(net, np.broadcast_to(image, (net.T, 1) + image.shape), record_voltages=(output,))
    for key, recorded in (("u", trace.currents), ("v", trace.voltages)):
        golden = np.load(folder / f"fc-3-{key}.npy").ravel()[:8].astype(np.int64)
        assert np.any(golden)
        _assert_equal(f"fc-3 {key}", recorded[output][:, 0, 0], golden)


# --- ntidigits: axonal delays, population-coded average readout ---------------------------------

@pytest.mark.parametrize("backend", ["reference", "cycle"])
def test_ntidigits_all_outputs_all_steps(backend):
    folder = GOLDEN / "ntidigits"
    net = load_netx(folder / "ntidigits.net")
    assert net.T == 3000 and net.output_node.shape == (11,)
    delays = [node.delay for node in net.nodes if node.delay is not None]
    assert len(delays) == 2 and max(int(d.max()) for d in delays) == 62
    events = np.load(folder / "input.npy").T.reshape((-1, 1) + net.input_node.shape).astype(np.int64)   # cochlea
    trace = {"reference": execute.run, "cycle": cycle.run}[backend](net, events)
    golden = np.load(folder / "output.npy").T.astype(np.int64)                 # [3000, 242]
    _assert_equal("output", trace.spikes["dense4"][:-4, 0], golden[4:])       # slayer: four steps later
    counts = trace.spikes["dense4"][:, 0].sum(axis=0).reshape(11, 22).sum(axis=1)
    np.testing.assert_array_equal(trace.readout[0], 64 * counts)


@pytest.mark.slow
def test_ntidigits_delays_on_lava():
    """Lava's DelayDense holds the delays (the first 400 steps, where the spikes are)."""
    net = load_netx(GOLDEN / "ntidigits" / "ntidigits.net", T=400)
    events = np.load(GOLDEN / "ntidigits" / "input.npy").T[:400].reshape((400, 1) + net.input_node.shape).astype(int)
    netfactory.assert_same_trace(execute.run(net, events), lava_backend.run(net, events))


# --- pilotnet_sdnn: sigma-delta neurons (Delta encoder, ReLU SigmaDelta layers, Sigma readout) -----

SDNN = GOLDEN / "pilotnet_sdnn"


def _pilotnet_sdnn(steps: int):
    """lava-dl runs the network free (no reset) on one frame, presented at every step."""
    net = load_netx(SDNN / "network.net", T=steps, timing="free-running")
    frame = np.load(SDNN / "input.npy")[..., 0].transpose(2, 1, 0)   # (x, y, c) -> (c, y, x)
    return net, np.broadcast_to(frame, (steps, 1) + frame.shape).astype(np.int64)


@pytest.mark.parametrize("backend", ["reference", "cycle", pytest.param("lava", marks=pytest.mark.slow)])
def test_pilotnet_sdnn_output(backend):
    """gts/pilotnet_sdnn/output.npy: the Sigma readout over the 9 steps lava-dl's test runs."""
    net, inputs = _pilotnet_sdnn(9)
    assert [node.neuron.kind for node in net.nodes if node.neuron] == ["sigma_delta"] * 8 + ["integrator"]
    run = {"reference": execute.run, "cycle": cycle.run, "lava": lava_backend.run}[backend]
    trace = run(net, inputs)
    _assert_equal("output", trace.readout_steps[:, 0, :].T, np.load(SDNN / "output.npy").astype(np.int64))


@pytest.mark.parametrize("backend", ["reference", "cycle"])
def test_pilotnet_sdnn_layers_as_loihi_computed_them(backend):
    """The Loihi 2 recordings next to it: the Delta encoder's messages (act0) and the sigma of the
    first two conv layers (sigma1, sigma2), every step of 20, for the same frame."""
    net, inputs = _pilotnet_sdnn(20)
    run = {"reference": execute.run, "cycle": cycle.run}[backend]
    trace = run(net, inputs, record_voltages=("conv1", "conv2"))
    _assert_equal("input messages", trace.spikes["input_neurons"][:, 0],
                  _steps_first(np.load(SDNN / "act0.npy"), net.node("input_neurons").shape))
    for name, file in (("conv1", "sigma1.npy"), ("conv2", "sigma2.npy")):
        _assert_equal(f"{name} sigma", trace.currents[name][:, 0], _steps_first(np.load(SDNN / file), net.node(name).shape))


def test_pilotnet_sdnn_static_bounds_hold_what_it_computes():
    """bound_analysis reads sigma-delta layers (sigma accumulated, act = relu(sigma + bias)) and the
    unshifted Sigma readout: every bound is at least what the golden frame makes the registers hold."""
    from snnc.passes import bound_analysis

    net, inputs = _pilotnet_sdnn(9)
    layers = [node.name for node in net.nodes if node.neuron is not None]
    trace = execute.run(net, inputs, record_voltages=tuple(layers))
    bounds = {entry["layer"]: entry for entry in bound_analysis(net)}
    for name in layers:
        assert bounds[name]["max_abs_voltage"] >= np.abs(trace.voltages[name]).max(), name
        assert bounds[name]["max_abs_current"] >= np.abs(trace.currents[name]).max(), name
    readout = net.output_node.name   # sigma += input: its bound is T x the largest input, not << 6
    assert bounds[readout]["max_abs_voltage"] < 64 * 9 * np.abs(net.output_node.weight).sum() * (1 << 19)


# --- the golden inputs as data files, through the CLI --------------------------------------------

@pytest.mark.slow
def test_golden_inputs_through_export_verify_simulate_energy(tmp_path):
    """The conversion docs/interop.md shows, then export, verify (every backend), simulate and
    energy on lava-dl's own inputs: the exported network's spikes are the goldens'."""
    steps = 400                                              # where the events are; all 3000 are tested above
    spikes = np.load(GOLDEN / "ntidigits" / "input.npy")[:, :steps]
    data = tmp_path / "ntidigits.npz"
    np.savez(data, inputs=np.ascontiguousarray(spikes.T.reshape(1, steps, 1, 1, 64), np.uint8))
    out = tmp_path / "out"
    result = invoke("export", str(NETX_TESTS / "gts" / "ntidigits" / "ntidigits.net"), "-o", str(out),
                    "--data", str(data), "--T", str(steps), "--json")
    assert result.exit_code == 0, result.output
    result = invoke("verify", str(out), "--data", str(data), "--backends", "reference,onnx,onnx-step,cycle",
                    "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["equivalent"]
    simulated = invoke("simulate", str(out), "--data", str(data), "--json")
    assert simulated.exit_code == 0, simulated.output
    golden = np.load(GOLDEN / "ntidigits" / "output.npy")[:, 4:steps + 4]      # slayer: four steps later
    expected = int(golden.sum(axis=1).reshape(11, 22).sum(axis=1).argmax())   # the golden output's class
    assert json.loads(simulated.stdout)["predictions"] == [expected]
    energy = invoke("energy", str(out), "--data", str(data), "--format", "json")
    assert energy.exit_code == 0, energy.output

    image = np.load(GOLDEN / "tinynet" / "input_bias.npy").transpose(2, 1, 0)
    data = tmp_path / "tinynet.npz"
    np.savez(data, inputs=np.ascontiguousarray(np.broadcast_to(image, (1, 64) + image.shape), np.int16))
    result = invoke("export", str(NETX_TESTS / "tiny.net"), "-o", str(tmp_path / "tiny"), "--data", str(data),
                    "--json")
    assert result.exit_code == 0, result.output
    result = invoke("verify", str(tmp_path / "tiny"), "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["equivalent"]


@pytest.mark.slow
def test_pilotnet_sdnn_frame_through_export_verify_simulate_energy(tmp_path):
    """lava-dl's signed SDNN frame as a data file (docs/interop.md): every backend of the export
    equals the reference (whose readout tests above compare with the golden), the cycle simulator
    and the energy report count its graded messages."""
    frame = np.load(SDNN / "input.npy")[..., 0]
    data = tmp_path / "pilotnet_sdnn.npz"
    np.savez(data, inputs=np.ascontiguousarray(frame.transpose(2, 1, 0)[None], np.int16))
    out = tmp_path / "out"
    result = invoke("export", str(SDNN / "network.net"), "-o", str(out), "--netx-timing", "free-running",
                    "--T", "9", "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    result = invoke("verify", str(out), "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["equivalent"] and set(report["backends"]) == {"reference", "onnx", "onnx-step", "lava", "cycle"}
    simulated = invoke("simulate", str(out), "--data", str(data), "--json")
    assert simulated.exit_code == 0, simulated.output
    assert json.loads(simulated.stdout)["samples"] == 1
    energy = invoke("energy", str(out), "--data", str(data), "--format", "json")
    assert energy.exit_code == 0, energy.output
    rows = {row["layer"]: row for row in json.loads(energy.stdout)["layers"]}
    trace = execute.run(*_pilotnet_sdnn(9))
    for name in ("conv1", "dense8"):   # a graded message is one event, whatever its value
        assert rows[name]["spikes"] == np.count_nonzero(trace.spikes[name]) > 0
        assert rows[name]["synaptic_ops_counted"] > 0
