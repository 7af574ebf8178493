"""lava-dl's mnist.net (no golden file ships with it) against lava-dl's own netx.hdf5.Network in
Lava's simulator, on real digits, in both of snnc's netx timings:
- layer-reset: lava-dl's `Network(reset_interval=16)`, digits streamed back to back (the bias of
  the next digit loaded by lava-dl's StateDataloader after each digit's 16th step); layer k holds
  digit i at chip steps i*16 + k + [0, 16);
- free-running: no resets, one digit per run, the bias zeroed after tSample steps (snnc's
  `present_steps`); snnc's logical step is the chip step.
Every spiking layer's spikes at every step and the output integrator's voltage are compared.
"""
import numpy as np
import pytest
from lavadl import NETX_TESTS, run_lava_dl

from snnc import execute
from snnc.backends import cycle
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
