"""lava-dl netx HDF5 networks (docs/interop.md): the reader gives a fixed snnc network with netx's
(Lava LIF's) arithmetic bit for bit; the writer produces files in the layout lava-dl reads."""
import h5py
import netfactory
import numpy as np
import pytest

from snnc import execute, ir
from snnc.errors import DesignRuleError, InputError, UsageError
from snnc.exporters.netx_export import export_netx
from snnc.frontends.netx import lava_dense_weights, load_netx


# --- files written the way lava-dl slayer's export_hdf5 writes them -------------------------------

def _layer(layers, index, kind, shape):
    group = layers.create_group(str(index))
    group.create_dataset("type", (1,), "S10", [kind.encode("ascii")])
    group.create_dataset("shape", data=np.array(shape))
    return group


def _cuba(group, i_decay, v_decay, vth, **extra):
    neuron = group.create_group("neuron")
    neuron.create_dataset("type", data=extra.pop("type", "CUBA"))
    neuron.create_dataset("iDecay", data=i_decay)
    neuron.create_dataset("vDecay", data=v_decay)
    neuron.create_dataset("vThMant", data=vth)
    neuron.create_dataset("refDelay", data=extra.pop("refDelay", 1))
    neuron.create_dataset("gradedSpike", data=extra.pop("gradedSpike", False))
    for key, value in extra.items():
        neuron.create_dataset(key, data=value)


def _dense(layers, index, weight, neuron=None, bias=None, delay=None):
    weight = np.asarray(weight)
    group = _layer(layers, index, "dense", [weight.shape[0]])
    group.create_dataset("inFeatures", data=weight.shape[1])
    group.create_dataset("outFeatures", data=weight.shape[0])
    group.create_dataset("weight", data=weight.astype(np.float32))
    if bias is not None:
        group.create_dataset("bias", data=np.asarray(bias, dtype=np.float32))
    if delay is not None:
        group.create_dataset("delay", data=np.asarray(delay, dtype=np.float32))
    if neuron is not None:
        _cuba(group, *neuron)
    return group


TINY_W1 = np.array([[100, -50, 20], [40, 80, -120]])
TINY_W2 = np.array([[60, 60], [-30, 90]])


def _tiny_file(path, input_layer=True, **overrides):
    """input 3 -> dense 2 (iDecay 1024, vDecay 128, vThMant 80) -> dense 2 (IF, vThMant 100);
    without `input_layer` the first dense layer says the input (inFeatures 3)."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        first = int(input_layer)
        if input_layer:
            _layer(layers, 0, "input", [3])
        _dense(layers, first, overrides.get("w1", TINY_W1), neuron=overrides.get("n1", (1024, 128, 80)),
               bias=overrides.get("bias1"), delay=overrides.get("delay1"))
        _dense(layers, first + 1, TINY_W2, neuron=(4096, 0, 100))
        simulation = f.create_group("simulation")
        simulation.create_dataset("Ts", data=1)
        simulation.create_dataset("tSample", data=6)
    return path


TINY_INPUT = np.zeros((6, 1, 3), dtype=np.int64)
TINY_INPUT[:, 0] = [1, 0, 1]
TINY_INPUT[2:4, 0, 1] = 1


def test_tiny_dense_network_by_hand(tmp_path):
    net = load_netx(_tiny_file(tmp_path / "tiny.net"))
    assert net.fixed and net.T == 6 and net.arithmetic["fire_rule"] == ">"
    hidden, out = net.node("dense1"), net.node("dense2")
    assert hidden.neuron.u_decay == 1023 and hidden.neuron.v_decay == 128     # du = iDecay - 1, dv = vDecay
    assert np.all(hidden.neuron.threshold == 80 << 6) and np.all(out.neuron.threshold == 100 << 6)
    trace = execute.run(net, TINY_INPUT, record_voltages=("dense1", "dense2"))
    # step 1: a = W1 @ [1,0,1] = [120, -80]; u = a << 6 = [7680, -5120]; v = u;
    #         7680 > 80 << 6 = 5120 fires (v -> 0), -5120 does not.
    # step 2: u = trunc(u * (4096 - 1024) / 4096) + a << 6 = [5760 + 7680, -3840 - 5120] = [13440, -8960]
    #         v = [0 + 13440 (fires), trunc(-5120 * 3968 / 4096) - 8960 = -4960 - 8960 = -13920]
    assert trace.voltages["dense1"][:2, 0].tolist() == [[0, -5120], [0, -13920]]
    assert trace.spikes["dense1"][:, 0, 0].tolist() == [1] * 6 and not trace.spikes["dense1"][:, 0, 1].any()
    # layer 2 (du = 4095: no current memory, dv = 0): v grows by W2[:,0] << 6 = [3840, -1920] per input
    # spike and fires when v > 6400, i.e. every second step; the readout counts 3 spikes (x 64).
    assert trace.voltages["dense2"][:, 0, 0].tolist() == [3840, 0, 3840, 0, 3840, 0]
    assert trace.spikes["dense2"][:, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert trace.readout[0].tolist() == [3 * 64, 0]
    assert net.readout == "last" and net.output_node.name == "readout"


def _lava_lif_numpy(layers, spikes):
    """docs/semantics.md section 6 (Lava's LIF), literally, for a chain of netx layers (du = iDecay - 1)."""
    for layer in layers:
        du, dv = layer["iDecay"] - 1, layer["vDecay"]
        u = v = None
        out = []
        for s in spikes:
            a = layer["synapse"](s).astype(np.int64)
            if u is None:
                u = np.zeros_like(a)
                v = np.zeros_like(a)
            decayed = u * (4096 - (du + 1))
            u = np.sign(decayed) * (np.abs(decayed) >> 12) + (a << 6)
            u = np.where(u > 2 ** 23, u - 2 ** 24, u)
            u = np.where(u <= -2 ** 23, u + 2 ** 24, u)
            decayed = v * (4096 - dv)
            v = np.sign(decayed) * (np.abs(decayed) >> 12) + u + (layer.get("bias", 0) << 6)
            v = np.clip(v, -(2 ** 23 - 1), 2 ** 23 - 1)
            fired = v > (layer["vThMant"] << 6)
            v = np.where(fired, 0, v)
            out.append(fired.astype(np.int64))
        spikes = np.stack(out)
        layer["spikes"] = spikes
    return layers


def _correlate(weight, stride, padding, dilation=1, groups=1):
    """PyTorch-style conv2d (correlation) on a batch [B, C, H, W], by explicit loops: output
    channel block g reads input channel block g, kernel taps `dilation` apart."""
    def apply(x):
        padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        kh, kw = weight.shape[2:]
        span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
        height = (padded.shape[2] - span_h) // stride + 1
        width = (padded.shape[3] - span_w) // stride + 1
        out = np.zeros((x.shape[0], weight.shape[0], height, width), dtype=np.int64)
        per_in, per_out = weight.shape[1], weight.shape[0] // groups
        for o in range(weight.shape[0]):
            block = slice((o // per_out) * per_in, (o // per_out + 1) * per_in)
            for i in range(height):
                for j in range(width):
                    patch = padded[:, block, i * stride:i * stride + span_h:dilation, j * stride:j * stride + span_w:dilation]
                    out[:, o, i, j] = np.einsum("bchw,chw->b", patch, weight[o])
        return out
    return apply


CONV_RNG = np.random.default_rng(4)
CONV_W = CONV_RNG.integers(-60, 61, (3, 2, 3, 3)) * 2       # slayer exports even 8-bit integers
CONV_BIAS = np.array([5, -3, 0])
CONV_DENSE_W = CONV_RNG.integers(-100, 101, (4, 3 * 3 * 3)) * 2


def _conv_file(path, input_layer=True):
    """input 2x5x5 -> conv 3 channels 3x3 stride 2 -> flatten -> dense 4; without `input_layer`
    the file starts with the conv layer (its input is then not in the file)."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        first = int(input_layer)
        if input_layer:
            _layer(layers, 0, "input", [2, 5, 5])
        conv = _layer(layers, first, "conv", [3, 3, 3])
        for key, value in (("inChannels", 2), ("outChannels", 3), ("kernelSize", [3, 3]), ("stride", [2, 2]),
                           ("padding", [1, 1]), ("dilation", [1, 1]), ("groups", 1)):
            conv.create_dataset(key, data=np.array(value))
        conv.create_dataset("weight", data=CONV_W.astype(np.float32))
        conv.create_dataset("bias", data=CONV_BIAS.astype(np.float32))
        _cuba(conv, 512, 256, 150)
        _layer(layers, first + 1, "flatten", [27, 1, 1])
        _dense(layers, first + 2, CONV_DENSE_W, neuron=(2048, 64, 200))
    return path


def test_conv_flatten_dense_network_matches_lava_lif_semantics(tmp_path):
    rng = np.random.default_rng(5)
    conv_w, bias_c, dense_w = CONV_W, CONV_BIAS, CONV_DENSE_W
    net = load_netx(_conv_file(tmp_path / "conv.net"), T=10)
    assert [n.op for n in net.nodes] == ["input", "conv2d", "flatten", "linear", "linear"]
    spikes = (rng.uniform(size=(10, 6, 2, 5, 5)) < 0.5).astype(np.int64)
    trace = execute.run(net, spikes)
    expected = _lava_lif_numpy([
        {"synapse": _correlate(conv_w, 2, 1), "iDecay": 512, "vDecay": 256, "vThMant": 150,
         "bias": bias_c.reshape(1, 3, 1, 1)},
        {"synapse": lambda s: s.reshape(s.shape[0], -1) @ dense_w.T, "iDecay": 2048, "vDecay": 64,
         "vThMant": 200}], spikes)
    for layer, name in zip(expected, ("conv1", "dense3")):
        assert 0.05 < layer["spikes"].mean() < 0.95
        np.testing.assert_array_equal(trace.spikes[name], layer["spikes"])


def _netx_dense(weights):
    """netx's optimize_weight_bits (as lava-dl's netx.utils computes it), for the Lava cross-check."""
    top, bottom = weights.max(), weights.min()
    signed = int(bottom < 0 < top)
    scale = min(127 / top, -128 / bottom) if signed else (255 / top if bottom >= 0 else -256 / bottom)
    scale_bits = int(np.floor(np.log2(scale))) + signed
    n = 8
    while n > 0 and np.abs(weights / 2 ** n - np.round(weights / 2 ** n)).sum() != 0:
        n -= 1
    n -= signed
    return (weights << scale_bits).astype(np.int32), int(8 - scale_bits - n), -scale_bits


@pytest.mark.slow   # runs Lava
def test_reader_matches_lavas_own_lif_and_dense(tmp_path):
    """The network netx would build (Lava's Dense + LIF, bit-accurate models) spikes like snnc's reference."""
    from snnc.backends.lava_backend import import_lava_runtime

    import_lava_runtime()   # Lava must set the start method that numba's kernels already fixed
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    rng = np.random.default_rng(7)
    w1 = rng.integers(-64, 64, (5, 6)) * 2
    w2 = rng.integers(-64, 64, (3, 5)) * 2
    params = [(w1, 1000, 300, 60), (w2, 4096, 100, 40)]
    path = tmp_path / "two.net"
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        _layer(layers, 0, "input", [6])
        for index, (w, i_decay, v_decay, vth) in enumerate(params, start=1):
            _dense(layers, index, w, neuron=(i_decay, v_decay, vth))
    T = 12
    spikes = (rng.uniform(size=(T, 1, 6)) < 0.6).astype(np.int64)
    trace = execute.run(load_netx(path, T=T), spikes)

    source = Source(data=np.ascontiguousarray(spikes[:, 0].T.astype(np.int32)))
    previous, sinks = source.s_out, []
    for w, i_decay, v_decay, vth in params:
        weights, bits, exponent = _netx_dense(w)
        dense = Dense(weights=weights, weight_exp=exponent, num_weight_bits=bits)
        lif = LIF(shape=(w.shape[0],), vth=vth, du=i_decay - 1, dv=v_decay, bias_mant=0, bias_exp=6)
        previous.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        sinks.append(Sink(shape=(w.shape[0],), buffer=T + 2))
        lif.s_out.connect(sinks[-1].a_in)
        previous = lif.s_out
    try:
        source.run(condition=RunSteps(num_steps=T + 2), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        recorded = [sink.data.get().T.astype(np.int64) for sink in sinks]
    finally:
        source.stop()
    for depth, (name, lava_spikes) in enumerate(zip(("dense1", "dense2"), recorded), start=1):
        # each Dense adds one step of latency; without biases the layers idle until input arrives
        assert trace.spikes[name][:, 0].any()
        np.testing.assert_array_equal(lava_spikes[depth:depth + T], trace.spikes[name][:, 0])


def test_writer_round_trip_and_layout(tmp_path):
    net = load_netx(_tiny_file(tmp_path / "tiny.net", bias1=[3, -2]))
    lines = export_netx(net, tmp_path / "again.net")
    assert lines == ["layer 0: input input [3]", "layer 1: dense dense1 [2]", "layer 2: dense dense2 [2]"]
    with h5py.File(tmp_path / "again.net", "r") as f:      # the fields lava-dl's netx reads
        dense = f["layer/1"]
        assert dense["type"][0] == b"dense" and dense["neuron/type"][()] == b"CUBA"
        assert int(dense["neuron/iDecay"][()]) == 1024 and int(dense["neuron/vDecay"][()]) == 128
        assert int(dense["neuron/vThMant"][()]) == 80 and dense["bias"][()].tolist() == [3, -2]
        np.testing.assert_array_equal(dense["weight"][()], TINY_W1)
        assert int(f["simulation/tSample"][()]) == 6
    back = load_netx(tmp_path / "again.net")
    doc_a, arrays_a = ir._to_parts(net)
    doc_b, arrays_b = ir._to_parts(back)
    assert doc_a["nodes"] == doc_b["nodes"] and doc_a["arithmetic"] == doc_b["arithmetic"]
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a) and arrays_a.keys() == arrays_b.keys()
    np.testing.assert_array_equal(execute.run(net, TINY_INPUT).readout, execute.run(back, TINY_INPUT).readout)


def test_writer_converts_the_greater_equal_rule(tmp_path):
    """A '>=' network with thresholds 64 m + 1 is the netx neuron with vThMant = m."""
    net = load_netx(_tiny_file(tmp_path / "tiny.net"))
    loihi2 = net.copy()
    loihi2.arithmetic = dict(loihi2.arithmetic, fire_rule=">=")
    for node in loihi2.spiking_nodes():
        node.neuron.threshold = node.neuron.threshold + 1
    export_netx(loihi2, tmp_path / "ge.net")
    with h5py.File(tmp_path / "ge.net", "r") as f:
        assert int(f["layer/1/neuron/vThMant"][()]) == 80
    np.testing.assert_array_equal(execute.run(loihi2, TINY_INPUT).spikes["dense2"],
                                  execute.run(load_netx(tmp_path / "ge.net"), TINY_INPUT).spikes["dense2"])


def _modified(net, change):
    out = net.copy()
    change(out.node("dense1").neuron)
    return out


@pytest.mark.parametrize("change, feature", [
    (lambda n: setattr(n, "reset", "soft") or setattr(n, "reset_amount", n.threshold.copy()), "soft reset"),
    (lambda n: setattr(n, "threshold", np.array([5120, 5184])), "per-neuron thresholds"),
    (lambda n: setattr(n, "threshold", np.array([5000, 5000])), "threshold 5000"),
    (lambda n: setattr(n, "initial_state", np.array([64, 0])), "initial state"),
    (lambda n: setattr(n, "bias", np.array([10, 0])), "multiple of 64"),
])
def test_writer_refuses_what_netx_cannot_express(tmp_path, change, feature):
    net = load_netx(_tiny_file(tmp_path / "tiny.net"))
    with pytest.raises(DesignRuleError, match=f"layer 'dense1': .*{feature}"):
        export_netx(_modified(net, change), tmp_path / "bad.net")
    assert not (tmp_path / "bad.net").exists()


def test_writer_refuses_snnc_networks_with_pooling_or_floats(tmp_path):
    from snnc.compiler import compile_network
    from snnc.targets import load_target

    float_net = netfactory.random_network(netfactory.recipe("mnist_lif"))
    with pytest.raises(InputError, match="not fixed-point"):
        export_netx(float_net, tmp_path / "f.net")
    fixed = compile_network(float_net, load_target("loihi1")).fixed
    with pytest.raises(DesignRuleError, match="layer 'pool1': sumpool"):
        export_netx(fixed, tmp_path / "p.net")


@pytest.mark.parametrize("overrides, message", [
    ({"delay1": [0, 2], "bias1": [1, 0]}, "per-neuron delays .* without bias"),
    ({"delay1": [[0, 1, 2], [1, 1, 0]]}, "a delay per synapse"),
    ({"delay1": [1, 2, 3, 4]}, "delays of shape"),
    ({"n1": (1024, 128, 80, {"type": "RF_IZ"})}, "neuron type 'RF_IZ'"),
    ({"w1": np.array([[300, -50, 20], [40, 80, -256]])}, "8-bit"),
    ({"n1": (np.array([1024, 512]), 128, 80)}, "per-neuron iDecay"),
])
def test_reader_refuses_unsupported_features(tmp_path, overrides, message):
    if "n1" in overrides and len(overrides["n1"]) == 4:
        *neuron, extra = overrides["n1"]
        overrides = dict(overrides, n1=tuple(neuron))
        path = _tiny_file(tmp_path / "x.net", **overrides)
        with h5py.File(path, "a") as f:
            for key, value in extra.items():
                del f[f"layer/1/neuron/{key}"]
                f.create_dataset(f"layer/1/neuron/{key}", data=value)
    else:
        path = _tiny_file(tmp_path / "x.net", **overrides)
    with pytest.raises(InputError, match=f"layer 1: .*{message}"):
        load_netx(path)


def test_reader_refuses_other_layouts(tmp_path):
    path = tmp_path / "pool.net"
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        _layer(layers, 0, "input", [1, 4, 4])
        _layer(layers, 1, "pool", [1, 2, 2])
    with pytest.raises(InputError, match="layer 1: netx layer type 'pool'"):
        load_netx(path, T=2)
    path = tmp_path / "input_neuron.net"
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        _cuba(_layer(layers, 0, "input", [3, 2]), 4096, 0, 10)
        _dense(layers, 1, np.ones((2, 6)), neuron=(4096, 0, 10))
    with pytest.raises(InputError, match="layer 0: an input layer with neurons of shape"):
        load_netx(path, T=2)
    with pytest.raises(UsageError, match="timing"):
        load_netx(_tiny_file(tmp_path / "t.net"), timing="late")
    (tmp_path / "plain.h5").write_bytes(b"nope")
    with pytest.raises(InputError, match="not an HDF5 file"):
        load_netx(tmp_path / "plain.h5", T=2)


def test_dense_without_neuron_is_the_netx_integrator(tmp_path):
    path = tmp_path / "integ.net"
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        _layer(layers, 0, "input", [3])
        _dense(layers, 1, TINY_W1, neuron=(1024, 128, 80))
        _dense(layers, 2, TINY_W2, bias=[1, 0])           # no neuron: netx's non-leaky integrator
    net = load_netx(path, T=6)
    readout = net.output_node
    assert readout.name == "dense2" and readout.neuron.kind == "integrator"
    assert (readout.neuron.u_decay, readout.neuron.v_decay) == (-1, 4096)
    trace = execute.run(net, TINY_INPUT)
    # v = u = running sum of (W2 @ s) << 6, plus the bias mantissa << 6 (not accumulated)
    hidden = trace.spikes["dense1"][:, 0].astype(np.int64)
    expected = np.cumsum(hidden @ TINY_W2.T, axis=0)[-1] * 64 + np.array([64, 0])
    np.testing.assert_array_equal(trace.readout[0], expected)
    export_netx(net, tmp_path / "integ2.net")
    with h5py.File(tmp_path / "integ2.net", "r") as f:
        assert "neuron" not in f["layer/2"] and f["layer/2/bias"][()].tolist() == [1, 0]


def test_lava_dense_weight_path():
    even = np.array([[254, -256, 2], [0, 10, -4]])
    assert np.array_equal(lava_dense_weights(even)[0], even)
    small = np.array([[3, -5], [7, 1]])
    assert np.array_equal(lava_dense_weights(small)[0], small)
    assert lava_dense_weights(np.array([[255, -256]]))[0] is None


def test_readout_integrator_with_bias_is_written_as_a_cuba_neuron_that_cannot_fire(tmp_path):
    net = load_netx(_tiny_file(tmp_path / "tiny.net"))
    readout = net.output_node
    readout.neuron.bias = np.array([64, -128])          # now an IF readout with a bias, not a spike count
    export_netx(net, tmp_path / "readout.net")
    with h5py.File(tmp_path / "readout.net", "r") as f:
        layer = f["layer/3"]
        assert layer.attrs["snnc_integrator"] and int(layer["neuron/vThMant"][()]) == (1 << 17) - 1
        assert int(layer["neuron/iDecay"][()]) == 4096 and int(layer["neuron/vDecay"][()]) == 0
    back = load_netx(tmp_path / "readout.net")
    assert back.output_node.neuron.kind == "integrator" and back.output_node.name == "readout"
    a, b = execute.run(net, TINY_INPUT), execute.run(back, TINY_INPUT)
    np.testing.assert_array_equal(a.readout, b.readout)
    assert a.readout[0].tolist() == [3 * 64 + 6 * 64, -6 * 128]


def test_artifact_writer_skips_or_refuses(tmp_path):
    from types import SimpleNamespace

    from snnc.exporters.netx_export import write_artifact

    net = load_netx(_tiny_file(tmp_path / "tiny.net"))
    assert write_artifact(SimpleNamespace(fixed=net), tmp_path, {}) == ["network.net"]
    soft = _modified(net, lambda n: setattr(n, "reset", "soft") or setattr(n, "reset_amount", n.threshold.copy()))
    (tmp_path / "network.net").unlink()
    assert write_artifact(SimpleNamespace(fixed=soft), tmp_path, {}) == []
    assert not (tmp_path / "network.net").exists()
    with pytest.raises(DesignRuleError, match="soft reset"):
        write_artifact(SimpleNamespace(fixed=soft), tmp_path, {"netx": True})


def test_the_file_says_its_input_and_input_shape_is_only_for_a_conv_first_file(tmp_path):
    """The input layer's shape, else the first dense layer's inFeatures; --input-shape only where
    neither exists (a file starting with a conv layer), refused in one line elsewhere."""
    with_input = load_netx(_tiny_file(tmp_path / "tiny.net"))
    dense_first = load_netx(_tiny_file(tmp_path / "dense_first.net", input_layer=False))
    assert with_input.input_node.shape == dense_first.input_node.shape == (3,)
    np.testing.assert_array_equal(execute.run(dense_first, TINY_INPUT).readout,
                                  execute.run(with_input, TINY_INPUT).readout)
    for path in ("tiny.net", "dense_first.net"):
        with pytest.raises(UsageError, match="--input-shape applies only to a netx file without an input layer"):
            load_netx(tmp_path / path, input_shape=(1, 3, 1))
    conv_first = _conv_file(tmp_path / "conv_first.net", input_layer=False)
    with pytest.raises(InputError, match="no input layer and no dense layer first: pass --input-shape C,H,W"):
        load_netx(conv_first, T=10)
    given = load_netx(conv_first, T=10, input_shape=(2, 5, 5))
    stored = load_netx(_conv_file(tmp_path / "conv.net"), T=10)
    assert given.input_node.shape == stored.input_node.shape == (2, 5, 5)
    spikes = (np.random.default_rng(6).uniform(size=(10, 3, 2, 5, 5)) < 0.5).astype(np.int64)
    np.testing.assert_array_equal(execute.run(given, spikes).readout, execute.run(stored, spikes).readout)
    with pytest.raises(InputError, match="conv layer after an input of shape"):
        load_netx(conv_first, T=10, input_shape=(50,))


def _grouped_file(path):
    """input 4x7x7 -> conv 6 channels in 2 groups, 3x3 taps 2 apart, stride 1, padding 2 -> flatten
    -> dense 3."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        _layer(layers, 0, "input", [4, 7, 7])
        conv = _layer(layers, 1, "conv", [6, 7, 7])
        for key, value in (("inChannels", 4), ("outChannels", 6), ("kernelSize", [3, 3]), ("stride", [1, 1]),
                           ("padding", [2, 2]), ("dilation", [2, 2]), ("groups", 2)):
            conv.create_dataset(key, data=np.array(value))
        conv.create_dataset("weight", data=GROUPED_W.astype(np.float32))
        _cuba(conv, 1024, 256, 60)
        _layer(layers, 2, "flatten", [294, 1, 1])
        _dense(layers, 3, GROUPED_DENSE_W, neuron=(2048, 64, 200))
    return path


GROUPED_W = CONV_RNG.integers(-60, 61, (6, 2, 3, 3)) * 2
GROUPED_DENSE_W = CONV_RNG.integers(-40, 41, (3, 294)) * 2


@pytest.mark.parametrize("backend", ["reference", "cycle", "onnx"])
def test_dilated_grouped_conv_matches_lava_lif_semantics(tmp_path, backend):
    """A conv with dilation 2 and 2 groups (netx's dilation and groups) on every backend but Lava
    (tests/test_netx_lavadl.py runs one in lava-dl's own Network), against the numpy loop."""
    from snnc.backends import cycle, onnx_backend

    net = load_netx(_grouped_file(tmp_path / "grouped.net"), T=8)
    conv = net.node("conv1")
    assert conv.attrs["dilation"] == [2, 2] and conv.attrs["groups"] == 2 and conv.weight.shape == (6, 2, 3, 3)
    assert any("grouped convolution" in note for note in net.metadata["netx"]["notes"])
    spikes = (np.random.default_rng(6).uniform(size=(8, 3, 4, 7, 7)) < 0.5).astype(np.int64)
    run = {"reference": execute.run, "cycle": cycle.run, "onnx": onnx_backend.run}[backend]
    trace = run(net, spikes)
    expected = _lava_lif_numpy([
        {"synapse": _correlate(GROUPED_W, 1, 2, dilation=2, groups=2), "iDecay": 1024, "vDecay": 256,
         "vThMant": 60},
        {"synapse": lambda s: s.reshape(s.shape[0], -1) @ GROUPED_DENSE_W.T, "iDecay": 2048, "vDecay": 64,
         "vThMant": 200}], spikes)
    for layer, name in zip(expected, ("conv1", "dense3")):
        assert 0.05 < layer["spikes"].mean() < 0.95, name
        np.testing.assert_array_equal(trace.spikes[name], layer["spikes"], err_msg=name)


def test_fields_netx_ignores_are_ignored_with_a_note(tmp_path):
    """slayer writes wgtExp next to the neuron; netx reads the exported weights as they are, and so
    does snnc, saying so where the exponent is not 0."""
    path = _tiny_file(tmp_path / "x.net")
    plain = load_netx(path)
    with h5py.File(path, "a") as f:
        f.create_dataset("layer/1/neuron/wgtExp", data=2)
    net = load_netx(path)
    assert any("wgtExp 2 ignored" in note for note in net.metadata["netx"]["notes"])
    assert np.array_equal(net.node("dense1").weight, plain.node("dense1").weight)
