"""lava-dl's mnist.net (no golden file ships with it) against lava-dl's own netx.hdf5.Network in
Lava's simulator, on real digits, in both of snnc's netx timings:
- layer-reset: lava-dl's `Network(reset_interval=16)`, digits streamed back to back (the bias of
  the next digit loaded by lava-dl's StateDataloader after each digit's 16th step); layer k holds
  digit i at chip steps i*16 + k + [0, 16);
- free-running: no resets, one digit per run, the bias zeroed after tSample steps (snnc's
  `present_steps`); snnc's logical step is the chip step.
Every spiking layer's spikes at every step and the output integrator's voltage are compared.
A small sigma-delta network (thresholds that leave residues, negative biases that ReLU cuts, a
changing signed input) is compared with lava-dl's Network message for message the same way.
"""
import h5py
import numpy as np
import pytest
from lavadl import NETX_TESTS, run_lava_dl

from snnc import execute
from snnc.backends import cycle, lava_backend, onnx_backend
from snnc.data import load_dataset
from snnc.frontends.netx import load_netx

MNIST_NET = NETX_TESTS / "mnist.net"
DIGITS = 3


def _digits(net):
    return execute.encode(net, load_dataset("mnist5k").test_images[:DIGITS].reshape(DIGITS, -1))


def _populations(net):
    """lava-dl's layer index (0: the input layer) -> snnc node, for the nodes with neurons."""
    return [node.name for node in net.nodes if node.neuron is not None]


@pytest.mark.slow   # runs Lava
@pytest.mark.parametrize("backend", [execute.run, cycle.run], ids=["reference", "cycle"])
def test_layer_reset_streamed_like_lava_dl(backend):
    net = load_netx(MNIST_NET, timing="layer-reset")
    period, names = net.T, _populations(net)
    inputs = _digits(net)
    trace = backend(net, inputs, record_voltages=(names[-1],))
    bias = inputs[0].astype(np.int64)
    spikes, voltage, _ = run_lava_dl(MNIST_NET, bias[0], DIGITS * period + len(names),
                                     loads=(period, period - 1, list(bias[1:])), reset_interval=period)
    window = np.arange(DIGITS)[None, :] * period + np.arange(period)[:, None]    # [T, B]
    for k, name in enumerate(names[:-1]):
        assert trace.spikes[name].any()
        np.testing.assert_array_equal(trace.spikes[name], spikes[k][window + k], err_msg=name)
    np.testing.assert_array_equal(trace.voltages[names[-1]], voltage[window + len(names) - 1])


@pytest.mark.slow   # runs Lava
def test_free_running_like_lava_dl():
    net = load_netx(MNIST_NET, timing="free-running")
    names, present = _populations(net), net.encoding["present_steps"]
    assert present == 16 and net.T == 16 + 3        # three synaptic layers, one step each
    inputs = _digits(net)
    trace = cycle.run(net, inputs, record_voltages=(names[-1],))
    np.testing.assert_array_equal(inputs[present:], 0)
    for digit in range(DIGITS):
        bias = inputs[0, digit].astype(np.int64)
        spikes, voltage, _ = run_lava_dl(MNIST_NET, bias, net.T, loads=(present, present - 1, [0 * bias]))
        for k, name in enumerate(names[:-1]):
            np.testing.assert_array_equal(trace.spikes[name][:, digit], spikes[k], err_msg=f"{name} digit {digit}")
        np.testing.assert_array_equal(trace.voltages[names[-1]][:, digit], voltage)


@pytest.mark.slow   # runs Lava
def test_netx_out_runs_in_lava_dl_like_the_original(tmp_path):
    """mnist.net read by snnc and written back (input neurons, transform, CUBA layers, the output
    integrator): lava-dl's own Network computes the original file's spikes from it, and snnc reads
    it back to the same network."""
    from snnc.exporters.netx_export import export_netx

    net = load_netx(MNIST_NET, timing="layer-reset")
    written = tmp_path / "mnist.net"
    export_netx(net, written)
    again = load_netx(written)
    assert again.encoding["pixel_transform"] == {"weight": 76, "bias": 64}
    inputs = _digits(net)
    expected, back = execute.run(net, inputs), execute.run(again, inputs)
    for name in expected.spikes:
        np.testing.assert_array_equal(back.spikes[name], expected.spikes[name], err_msg=name)
    np.testing.assert_array_equal(back.readout, expected.readout)
    bias, period = inputs[0].astype(np.int64), net.T
    runs = [run_lava_dl(path, bias[0], DIGITS * period + 4, loads=(period, period - 1, list(bias[1:])),
                        reset_interval=period) for path in (MNIST_NET, written)]
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[1][0][k], runs[0][0][k], err_msg=f"layer {k}")
    np.testing.assert_array_equal(runs[1][1], runs[0][1])


@pytest.mark.slow   # runs Lava
def test_free_running_netx_out_runs_in_lava_dl(tmp_path):
    """The free-running reading (one step per synapse, held as Node.delay = 1) is written without
    delays and marked snnc/latency = 1: lava-dl's Network on it spikes as snnc's trace, and snnc
    reads it back to the same delays."""
    from snnc.exporters.netx_export import export_netx

    net = load_netx(MNIST_NET, timing="free-running")
    written = tmp_path / "mnist.net"
    export_netx(net, written)
    again = load_netx(written)
    assert again.T == net.T and again.metadata["netx"]["semantics"]["timing"] == "free-running"
    delays = [[0 if node.delay is None else int(node.delay.max()) for node in n.nodes] for n in (net, again)]
    assert delays[1] == delays[0] == [0, 0, 1, 1, 1]
    names, present = _populations(net), net.encoding["present_steps"]
    inputs = _digits(net)[:, :1]
    trace = cycle.run(again, inputs, record_voltages=(names[-1],))
    bias = inputs[0, 0].astype(np.int64)
    spikes, voltage, _ = run_lava_dl(written, bias, net.T, loads=(present, present - 1, [0 * bias]))
    for k, name in enumerate(names[:-1]):
        assert trace.spikes[name].any()
        np.testing.assert_array_equal(trace.spikes[name][:, 0], spikes[k], err_msg=name)
    np.testing.assert_array_equal(trace.voltages[names[-1]][:, 0], voltage)


def _sdnn_file(path, rng):
    """An SDNN netx file as slayer writes one: a Delta input layer (2x6x6), a ReLU SigmaDelta conv,
    a dilated, grouped one, a ReLU SigmaDelta dense and a Sigma readout (sigma_output)."""
    layers = [("input", [2, 6, 6], {}, {"vThMant": 1}),
              ("conv", [3, 6, 6], {"weight": rng.integers(-20, 21, (3, 2, 3, 3)), "bias": rng.integers(-30, 31, 3),
                                   "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1,
                                   "inChannels": 2, "outChannels": 3, "kernelSize": [3, 3]}, {"vThMant": 2}),
              ("conv", [6, 4, 6], {"weight": rng.integers(-20, 21, (6, 1, 3, 3)), "bias": rng.integers(-30, 31, 6),
                                   "stride": [1, 1], "padding": [1, 2], "dilation": [2, 2], "groups": 3,
                                   "inChannels": 3, "outChannels": 6, "kernelSize": [3, 3]}, {"vThMant": 1}),
              ("flatten", [144], {}, None),
              ("dense", [8], {"weight": 2 * rng.integers(-20, 21, (8, 144)), "bias": rng.integers(-20, 21, 8),
                              "inFeatures": 144, "outFeatures": 8}, {"vThMant": 1}),
              ("dense", [3], {"weight": 2 * rng.integers(-20, 21, (3, 8)), "inFeatures": 8, "outFeatures": 3},
               {"vThMant": 0, "sigma_output": True})]
    with h5py.File(path, "w") as handle:
        for index, (kind, shape, fields, neuron) in enumerate(layers):
            group = handle.create_group(f"layer/{index}")
            group.create_dataset("type", (1,), "S10", [kind.encode()])
            group.create_dataset("shape", data=np.array(shape))
            for key, value in fields.items():
                group.create_dataset(key, data=np.asarray(value, dtype=np.float32 if key in ("weight", "bias") else None))
            if neuron is not None:
                group.create_dataset("neuron/type", data=b"SDNN")
                group.create_dataset("neuron/activation", data=b"relu")
                for key, value in neuron.items():
                    group.create_dataset(f"neuron/{key}", data=value)
    return path


@pytest.mark.slow   # runs Lava
def test_sigma_delta_like_lava_dl(tmp_path):
    rng = np.random.default_rng(7)
    path, steps = _sdnn_file(tmp_path / "sdnn.net", rng), 12
    net = load_netx(path, T=steps, timing="free-running")
    frames = rng.integers(-30, 31, (steps, 1, 2, 6, 6))
    frames[4:8] = frames[3]                                   # a still input: only residues move
    names = _populations(net)
    lava_frames = np.ascontiguousarray(frames[:, 0].transpose(3, 2, 1, 0))   # (x, y, c, t)
    spikes, sigma, _ = run_lava_dl(path, None, steps, frames=lava_frames)
    for run in (execute.run, cycle.run, onnx_backend.run, lava_backend.run):
        trace = run(net, frames)
        for k, name in enumerate(names[:-1]):
            assert np.count_nonzero(trace.spikes[name]) > 0, name
            np.testing.assert_array_equal(trace.spikes[name][:, 0], spikes[k], err_msg=f"{run.__module__} {name}")
        np.testing.assert_array_equal(trace.readout_steps[:, 0], sigma, err_msg=run.__module__)
        np.testing.assert_array_equal(trace.readout_steps[:, 0], spikes[len(names) - 1])


@pytest.mark.slow   # runs Lava
def test_sigma_delta_netx_out_runs_in_lava_dl_like_the_original(tmp_path):
    """The sigma-delta network read by snnc and written back: lava-dl's Network computes the
    original's messages from it, and snnc reads it back to the same network."""
    from snnc.exporters.netx_export import export_netx

    rng = np.random.default_rng(8)
    path, steps = _sdnn_file(tmp_path / "sdnn.net", rng), 10
    net = load_netx(path, T=steps, timing="free-running")
    written = tmp_path / "written.net"
    export_netx(net, written)
    again = load_netx(written)
    assert again.metadata["netx"]["semantics"]["timing"] == "free-running"
    frames = rng.integers(-30, 31, (steps, 1, 2, 6, 6))
    expected, back = execute.run(net, frames), execute.run(again, frames)
    for name in expected.spikes:
        np.testing.assert_array_equal(back.spikes[name], expected.spikes[name], err_msg=name)
    spikes, sigma, _ = run_lava_dl(written, None, steps, frames=np.ascontiguousarray(frames[:, 0].transpose(3, 2, 1, 0)))
    for k, name in enumerate(_populations(net)[:-1]):
        np.testing.assert_array_equal(spikes[k], expected.spikes[name][:, 0], err_msg=name)
    np.testing.assert_array_equal(sigma, expected.readout_steps[:, 0])


def _cuba_file(path, rng):
    """A CUBA netx file with what lava-dl reads beyond plain layers: spike-driven input neurons, a
    dense_rec layer with a bias, a dense layer with a delay per neuron, and slayer's average readout."""
    def neuron(group, i_decay, v_decay, vth):
        for key, value in {"type": b"CUBA", "iDecay": i_decay, "vDecay": v_decay, "vThMant": vth, "refDelay": 1,
                           "gradedSpike": False}.items():
            group.create_dataset(f"neuron/{key}", data=value)

    with h5py.File(path, "w") as handle:
        layers = handle.create_group("layer")
        for index, (kind, shape) in enumerate([("input", [12]), ("dense_rec", [10]), ("dense", [6]), ("average", [2])]):
            layers.create_group(str(index)).create_dataset("type", (1,), "S10", [kind.encode()])
            layers[str(index)].create_dataset("shape", data=np.array(shape))
        neuron(layers["0"], 2048, 1024, 1)
        rec = layers["1"]
        rec.create_dataset("weight", data=(2 * rng.integers(-30, 31, (10, 12))).astype(np.float32))
        rec.create_dataset("weight_rec", data=(2 * rng.integers(-15, 16, (10, 10))).astype(np.float32))
        rec.create_dataset("bias", data=rng.integers(-3, 4, 10).astype(np.float32))
        neuron(rec, 1024, 512, 20)
        dense = layers["2"]
        dense.create_dataset("weight", data=(2 * rng.integers(-30, 31, (6, 10))).astype(np.float32))
        dense.create_dataset("delay", data=np.array([0, 1, 2, 3, 4, 5], dtype=np.float32))
        neuron(dense, 1024, 256, 10)
    return path


@pytest.mark.slow   # runs Lava
def test_input_neurons_dense_rec_delays_and_average_like_lava_dl(tmp_path):
    """Read free-running with spike-driven input neurons: every layer's spikes equal lava-dl's (the
    dense layer's after the delays netx puts on its input synapses); written back, lava-dl runs the
    written file to the same spikes and snnc reads it back to the same network."""
    from snnc.exporters.netx_export import export_netx

    rng = np.random.default_rng(3)
    path, steps = _cuba_file(tmp_path / "cuba.net", rng), 24
    net = load_netx(path, T=steps, timing="free-running", input_drive="spikes")
    assert net.node("dense1").recurrent is not None and net.output_node.name == "average3"
    spikes = (rng.random((steps, 1, 12)) < 0.5).astype(np.int64)
    trace = execute.run(net, spikes)
    names = ["input_neurons", "dense1", "dense2"]
    delayed = trace.spikes["dense2"][:, 0].copy()
    for neuron, delay in enumerate(range(6)):
        delayed[:, neuron] = np.concatenate([np.zeros(delay, np.uint8), delayed[:steps - delay, neuron]])
    expected = [trace.spikes["input_neurons"][:, 0], trace.spikes["dense1"][:, 0], delayed]
    written = tmp_path / "written.net"
    export_netx(net, written)
    with h5py.File(written) as handle:
        assert [handle[f"layer/{i}/type"][0] for i in range(4)] == [b"input", b"dense_rec", b"dense", b"average"]
    again = load_netx(written)
    back = execute.run(again, spikes)
    np.testing.assert_array_equal(back.readout_steps, trace.readout_steps)
    for file in (path, written):
        lava, _, _ = run_lava_dl(file, None, steps, frames=np.ascontiguousarray(spikes[:, 0].T.astype(np.int32)),
                                 num_layers=3)
        for k, name in enumerate(names):
            assert expected[k].any(), name
            np.testing.assert_array_equal(lava[k], expected[k], err_msg=f"{file.name} {name}")


@pytest.mark.slow   # runs Lava
def test_ntidigits_written_back_runs_in_lava_dl(tmp_path):
    """ntidigits.net (delays per neuron, average readout) read free-running and written back:
    lava-dl's Network runs the written file, every layer's spikes equal to snnc's after the delays
    the file puts on each layer's input synapses; snnc reads it back to the same readout."""
    from snnc.exporters.netx_export import export_netx

    steps, golden = 150, NETX_TESTS / "gts" / "ntidigits"
    net = load_netx(golden / "ntidigits.net", T=steps, timing="free-running")
    written = tmp_path / "ntidigits.net"
    export_netx(net, written)
    spikes = np.load(golden / "input.npy")[:, :steps]
    trace = execute.run(net, spikes.T.reshape(steps, 1, 64).astype(np.int64))
    np.testing.assert_array_equal(execute.run(load_netx(written), spikes.T.reshape(steps, 1, 64)).readout_steps,
                                  trace.readout_steps)
    lava, _, _ = run_lava_dl(written, None, steps, frames=spikes.astype(np.int32), num_layers=5)
    with h5py.File(written) as handle:
        assert handle["layer/5/type"][0] == b"average"
        for k, name in enumerate(["dense2", "dense3", "dense4"]):
            layer = handle[f"layer/{k + 2}"]
            delay = layer["delay"][()].astype(np.int64) if "delay" in layer else np.zeros(net.node(name).shape, np.int64)
            ours = trace.spikes[name][:, 0]
            expected = np.stack([np.concatenate([np.zeros(d, np.uint8), ours[:steps - d, j]])
                                 for j, d in enumerate(delay)], axis=1)
            assert expected.any(), name
            np.testing.assert_array_equal(lava[k], expected, err_msg=name)
