"""Recurrent synapses (Node.recurrent) and axonal delays (Node.delay), docs/ir.md: the float and
the fixed-point reference against plain numpy step loops written here, quantization, the IR's
on-disk form and validation, and the ONNX backend spike for spike against the reference."""
import numpy as np
import pytest

from snnc import execute, ir
from snnc.errors import InputError
from snnc.ir import Network, Neuron, Node
from snnc.passes.quantize import bound_analysis, quantize
from snnc.targets import load_target

T, B = 7, 4
TARGET = load_target("loihi2")
FIXED = dict(TARGET.arithmetic, kind="fixed")


# --- independent step loops (numpy, one step at a time) ------------------------------------------

def _conv(x: np.ndarray, weight: np.ndarray, padding: int) -> np.ndarray:
    """Stride-1 convolution of [B, Ci, H, W] by [Co, Ci, k, k], written out over output positions."""
    k = weight.shape[2]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    height, width = padded.shape[2] - k + 1, padded.shape[3] - k + 1
    out = np.zeros((x.shape[0], weight.shape[0], height, width), dtype=np.float64)
    for i in range(height):
        for j in range(width):
            out[:, :, i, j] = np.einsum("bckl,ockl->bo", padded[:, :, i:i + k, j:j + k], weight)
    return out


def _delayed(x: np.ndarray, delay: np.ndarray) -> np.ndarray:
    """x [T, B, *shape] with element j read at step t - delay[j], zero before step 0."""
    out = np.zeros_like(x, dtype=np.float64)
    flat_in, flat_out = x.reshape(len(x), x.shape[1], -1), out.reshape(len(x), x.shape[1], -1)
    for j, d in enumerate(delay.reshape(-1)):
        for t in range(d, len(x)):
            flat_out[t, :, j] = flat_in[t - d, :, j]
    return out


def _op(node: Node, x: np.ndarray) -> np.ndarray:
    """The node's op on one step [B, ...]."""
    if node.op == "linear":
        return x @ np.asarray(node.weight, np.float64).T
    if node.op == "conv2d":
        return _conv(x, np.asarray(node.weight, np.float64), node.attrs["padding"][0])
    assert node.op == "flatten"
    return x.reshape(x.shape[0], -1)


def _trunc_decay(x: np.ndarray, keep: int, bits: int) -> np.ndarray:
    return np.sign(x) * (np.abs(x) * keep // 2 ** bits)


def _limit(x: np.ndarray, bits: int, mode: str) -> np.ndarray:
    top = 2 ** (bits - 1)
    if mode == "saturate":
        return np.clip(x, 1 - top, top - 1)
    x = np.where(x > top, x - 2 * top, x)
    return np.where(x <= -top, x + 2 * top, x)


def _neuron_loop(node: Node, z: np.ndarray, arithmetic: dict) -> np.ndarray:
    """One population over T steps on its op's output z [T, B, *shape], the recurrent input added
    from its own spikes of the previous step; spikes (spiking) or v (integrator) per step."""
    n, shape = node.neuron, z.shape[1:]
    fixed = arithmetic["kind"] == "fixed"
    v = np.broadcast_to(np.asarray(n.initial_state, np.float64 if not fixed else np.int64), shape).copy()
    u = np.zeros_like(v)
    bias = np.broadcast_to(n.bias, shape)
    spikes = np.zeros(shape)
    outputs = []
    for t in range(len(z)):
        drive = z[t].copy()
        if node.recurrent is not None:
            drive += (spikes.reshape(len(spikes), -1) @ np.asarray(node.recurrent).T).reshape(shape)
        if fixed:
            drive = drive.astype(np.int64)
            bits, state = arithmetic["decay_bits"], arithmetic["state_bits"]
            unit = 2 ** bits
            u = _limit(_trunc_decay(u, unit - n.u_decay - 1, bits) + drive * 2 ** arithmetic["activation_shift"],
                       state, arithmetic["current_overflow"])
            v = _limit(_trunc_decay(v, unit - n.v_decay, bits) + u + bias, state, arithmetic["voltage_overflow"])
        else:
            u = (1 - n.u_decay) * u + drive
            v = (1 - n.v_decay) * v + n.input_gain * u + bias
        if n.kind != "spiking":
            outputs.append(v.copy())
            continue
        spikes = (v >= np.broadcast_to(n.threshold, shape)).astype(np.int64)
        if n.reset == "hard":
            v = np.where(spikes == 1, 0, v)
        elif n.reset == "soft":
            v = v - spikes * np.broadcast_to(n.reset_amount, shape)
        outputs.append(spikes.copy())
    return np.stack(outputs)


def loop_run(net: Network, inputs: np.ndarray):
    """Every spiking node's spikes [T, B, *shape] and the readout's state per step, layer by layer."""
    values, spikes = {"input": np.broadcast_to(inputs, (T,) + inputs.shape[1:]).astype(np.float64)}, {}
    for node in net.nodes[1:]:
        x = values[node.inputs[0]]
        if node.delay is not None:
            x = _delayed(x, node.delay)
        z = np.stack([_op(node, x[t]) for t in range(T)])
        if node.bn is not None:
            per = (-1,) + (1,) * (z.ndim - 3)
            z = z * node.bn.scale.reshape(per) + node.bn.shift.reshape(per)
        if node.neuron is None:
            values[node.name] = z
            continue
        values[node.name] = _neuron_loop(node, z, net.arithmetic)
        if node.spiking:
            spikes[node.name] = values[node.name]
    return spikes, values[net.output_node.name]


# --- hand-built networks -------------------------------------------------------------------------

def _float_neuron(rng, shape, kind="spiking", reset="soft") -> Neuron:
    spiking = kind == "spiking"
    return Neuron(kind=kind, threshold=rng.uniform(0.6, 1.2, shape) if spiking else None,
                  reset=reset if spiking else "none",
                  reset_amount=rng.uniform(0.5, 1.0, shape) if reset == "soft" and spiking else None,
                  bias=rng.uniform(-0.05, 0.05, shape),
                  initial_state=rng.uniform(-0.2, 0.2, shape), v_decay=0.2 if spiking else 0.0,
                  u_decay=0.5 if spiking else 1.0)


def _fixed_neuron(rng, shape, kind="spiking", reset="soft") -> Neuron:
    spiking = kind == "spiking"
    return Neuron(kind=kind, threshold=rng.integers(150_000, 300_000, shape) if spiking else None,
                  reset=reset if spiking else "none",
                  reset_amount=rng.integers(100_000, 200_000, shape) if reset == "soft" and spiking else None,
                  bias=rng.integers(-500, 500, shape), initial_state=rng.integers(-20_000, 20_000, shape),
                  v_decay=500 if spiking else 0, u_decay=1500 if spiking else 4095)


def dense_net(fixed: bool, recurrent=True, delay=False, seed=0) -> Network:
    """input (6) -> fc (5 spiking, recurrent) -> readout (3)."""
    rng = np.random.default_rng(seed)
    neuron = _fixed_neuron if fixed else _float_neuron
    weights = (lambda shape, top: rng.integers(-top, top + 1, shape)) if fixed else \
        (lambda shape, top: rng.uniform(-1.0, 1.0, shape))
    fc = Node("fc", "linear", ["input"], (5,), weight=weights((5, 6), 40) + (0 if fixed else 0.4),
              neuron=neuron(rng, (5,)))
    if recurrent:
        fc.recurrent = weights((5, 5), 2000) * (1 if fixed else 0.8)
    if delay:
        fc.delay = np.arange(6, dtype=np.int64) % 6
    readout = Node("readout", "linear", ["fc"], (3,), weight=weights((3, 5), 30),
                   neuron=neuron(rng, (3,), kind="integrator"))
    return Network(name="dense", T=T, readout="mean", nodes=[Node("input", "input", [], (6,)), fc, readout],
                   arithmetic=FIXED if fixed else {"kind": "float"},
                   encoding={"scale": 1 / 255, "max": 255}, metadata={"target": TARGET.name} if fixed else {})


def conv_net(fixed: bool, recurrent=True, delay=False, seed=1) -> Network:
    """input (2, 5, 5) -> conv 3x3 (3, 5, 5 spiking, recurrent over all 75) -> flatten -> readout (3)."""
    rng = np.random.default_rng(seed)
    neuron = _fixed_neuron if fixed else _float_neuron
    weights = (lambda shape, top: rng.integers(-top, top + 1, shape)) if fixed else \
        (lambda shape, top: rng.uniform(-0.6, 0.6, shape))
    conv = Node("conv", "conv2d", ["input"], (3, 5, 5), attrs={"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]},
                weight=weights((3, 2, 3, 3), 25) + (0 if fixed else 0.15), neuron=neuron(rng, (3, 5, 5)))
    if recurrent:
        conv.recurrent = weights((75, 75), 600) * (1 if fixed else 0.3)
    if delay:
        conv.delay = rng.integers(0, 6, (2, 5, 5))
    readout = Node("readout", "linear", ["flatten"], (3,), weight=weights((3, 75), 20),
                   neuron=neuron(rng, (3,), kind="integrator"))
    return Network(name="conv", T=T, readout="mean", nodes=[
        Node("input", "input", [], (2, 5, 5)), conv, Node("flatten", "flatten", ["conv"], (75,)), readout],
        arithmetic=FIXED if fixed else {"kind": "float"},
        encoding={"scale": 1 / 255, "max": 255}, metadata={"target": TARGET.name} if fixed else {})


def per_step_inputs(net: Network, seed=5) -> np.ndarray:
    """Inputs that change at every step [T, B, ...]: 0..255 units, times the scale when float."""
    units = np.random.default_rng(seed).integers(0, 256, (T, B) + net.input_node.shape)
    return units if net.fixed else units * net.encoding["scale"]


NETWORKS = {"dense": dense_net, "conv": conv_net}
CASES = [(name, recurrent, delay) for name in NETWORKS for recurrent, delay in
         ((True, False), (False, True), (True, True))]


def _assert_active(spikes: dict[str, np.ndarray]) -> None:
    """The comparison is not vacuous: some neurons fire, not all of them always."""
    total = np.concatenate([s.reshape(-1) for s in spikes.values()])
    assert total.any() and not total.all()


# --- the reference against the loops ------------------------------------------------------------

@pytest.mark.parametrize("fixed", [False, True], ids=["float", "fixed"])
@pytest.mark.parametrize("name, recurrent, delay", CASES)
def test_reference_equals_the_step_loop(name, recurrent, delay, fixed):
    net = NETWORKS[name](fixed, recurrent=recurrent, delay=delay)
    net.validate()
    inputs = per_step_inputs(net)
    spikes, readout_steps = loop_run(net, inputs)
    _assert_active(spikes)
    trace = execute.run(net, inputs)
    for layer, expected in spikes.items():
        assert np.array_equal(trace.spikes[layer], expected), layer
    if fixed:
        assert np.array_equal(trace.readout_steps, readout_steps)
    else:
        np.testing.assert_allclose(trace.readout_steps, readout_steps, rtol=1e-9, atol=1e-9)


def test_recurrence_and_delays_change_the_spikes():
    """The loop's own terms matter: dropping the recurrent weights or the delays changes spikes."""
    for build in (dense_net, conv_net):
        for fixed in (False, True):
            net = build(fixed, recurrent=True, delay=True)
            inputs = per_step_inputs(net)
            layer = net.nodes[1].name
            reference = execute.run(net, inputs).spikes[layer]
            for field in ("recurrent", "delay"):
                other = net.copy()
                setattr(other.nodes[1], field, None)
                assert not np.array_equal(execute.run(other, inputs).spikes[layer], reference), (build, field)


def test_static_input_is_delayed_like_the_repeated_frame():
    """One frame for every step (execute.encode's broadcast) is delayed as the frame repeated T times."""
    net = conv_net(True, recurrent=False, delay=True)
    frames = np.random.default_rng(2).integers(0, 256, (B, 2, 5, 5))
    inputs = execute.encode(net, frames)
    spikes, _ = loop_run(net, np.repeat(frames[None], T, axis=0))
    assert np.array_equal(execute.run(net, inputs).spikes["conv"], spikes["conv"])
    import torch

    one = execute.delayed_input(net.node("conv"), torch.from_numpy(frames[None].astype(np.float64)), T)
    assert np.array_equal(one.numpy(), _delayed(np.repeat(frames[None], T, axis=0), net.node("conv").delay))


def test_delays_beyond_T_never_arrive():
    net = dense_net(True, recurrent=False, delay=True)
    net.node("fc").delay = np.full(6, T + 3, dtype=np.int64)
    trace = execute.run(net, per_step_inputs(net))
    silent = net.copy()
    silent.node("fc").weight = np.zeros_like(silent.node("fc").weight)
    silent.node("fc").delay = None
    assert np.array_equal(trace.spikes["fc"], execute.run(silent, per_step_inputs(net)).spikes["fc"])


def test_chunks_keep_each_sample_its_own_recurrence():
    net = conv_net(True, recurrent=True, delay=True)
    inputs = per_step_inputs(net)
    whole = execute.run(net, inputs)
    chunked = execute.run(net, inputs, chunk=1)
    assert np.array_equal(whole.spikes["conv"], chunked.spikes["conv"])
    assert np.array_equal(whole.readout_steps, chunked.readout_steps)


# --- folding and quantization --------------------------------------------------------------------

def test_folding_keeps_the_float_spikes():
    """With an input gain and a batch norm (negative scales included) the folded network fires as
    the unfolded one: the recurrent weights take the gain and the |a| rescaling."""
    from snnc.passes.fold import fold_all

    net = conv_net(False, recurrent=True, delay=True)
    conv = net.node("conv")
    conv.neuron.input_gain = 0.5
    conv.neuron.u_decay = 1.0   # fold_synapse_bias moves the batch norm's shift to the membrane: exact without current memory
    conv.bn = ir.Affine(scale=np.array([1.7, -0.8, 0.6]), shift=np.array([0.1, 0.3, -0.05]))
    inputs = per_step_inputs(net)
    spikes, _ = loop_run(net, inputs)
    _assert_active(spikes)
    assert np.array_equal(execute.run(net, inputs).spikes["conv"], spikes["conv"])
    folded = fold_all(net)
    assert folded.node("conv").bn is None and folded.node("conv").neuron.input_gain == 1.0
    assert np.array_equal(execute.run(folded, inputs).spikes["conv"], spikes["conv"])


@pytest.mark.parametrize("build", [dense_net, conv_net], ids=["dense", "conv"])
def test_quantized_recurrent_weights_share_the_feed_forward_scale(build):
    net = build(False, recurrent=True, delay=True)
    fixed = quantize(net, TARGET)
    fixed.validate()
    node, source = fixed.nodes[1], net.nodes[1]
    per_row = np.repeat(node.scale, int(np.prod(node.shape)) // node.shape[0])[:, None]
    limit = 2 ** (TARGET.arithmetic["weight_bits"] - 1) - 1
    assert np.array_equal(node.recurrent, np.clip(np.round(source.recurrent / per_row), -limit, limit))
    per_channel = node.scale.reshape((-1,) + (1,) * (source.weight.ndim - 1))
    in_unit = net.encoding["scale"]
    assert np.array_equal(node.weight, np.clip(np.round(source.weight * in_unit / per_channel), -limit, limit))
    assert node.recurrent.dtype == np.int64 and np.abs(node.recurrent).max() > 0
    assert np.array_equal(node.delay, source.delay)
    units = np.random.default_rng(5).integers(0, 256, (T, B) + net.input_node.shape)
    spikes, readout_steps = loop_run(fixed, units)
    _assert_active(spikes)
    trace = execute.run(fixed, units)
    assert np.array_equal(trace.spikes[node.name], spikes[node.name])
    assert np.array_equal(trace.readout_steps, readout_steps)


def test_bounds_count_the_recurrent_weights():
    net = dense_net(True, recurrent=False)
    without = bound_analysis(net)[0]["max_abs_current"]
    net.node("fc").recurrent = np.full((5, 5), -1000, dtype=np.int64)   # the side that is already worst
    with_recurrence = bound_analysis(net)[0]["max_abs_current"]
    # u keeps (4096 - 1500 - 1) / 4096 per step; the extra drive per step is 5 x 1000 << 6
    keep = (4096 - 1500 - 1) / 4096
    extra = 5 * 1000 * 64 * sum(keep ** i for i in range(T))
    assert with_recurrence - without == pytest.approx(extra, abs=2)


def test_float32_ops_count_the_recurrent_input():
    net = dense_net(True, recurrent=False)
    assert "fc" in execute.float32_ops(net)
    net.node("fc").recurrent = np.full((5, 5), 2 ** 22, dtype=np.int64)
    assert "fc" not in execute.float32_ops(net)


# --- the IR --------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    net = conv_net(True, recurrent=True, delay=True)
    ir.save(net, tmp_path)
    back = ir.load(tmp_path)
    for field in ("recurrent", "delay"):
        original, loaded = getattr(net.node("conv"), field), getattr(back.node("conv"), field)
        assert loaded.dtype == original.dtype and np.array_equal(loaded, original)
    assert back.node("readout").recurrent is None and back.node("readout").delay is None


def test_files_without_the_fields_still_load(tmp_path):
    import json

    net = dense_net(True, recurrent=False)
    ir.save(net, tmp_path)
    doc = json.loads((tmp_path / "network.json").read_text())
    assert all("recurrent" not in node and "delay" not in node for node in doc["nodes"])
    back = ir.load(tmp_path)
    assert all(node.recurrent is None and node.delay is None for node in back.nodes)


def _broken(change) -> Network:
    net = conv_net(True, recurrent=True, delay=True)
    change(net)
    return net


@pytest.mark.parametrize("change, message", [
    (lambda n: setattr(n.node("conv"), "recurrent", np.zeros((75, 74), np.int64)), "conv.*not \\[75, 75\\]"),
    (lambda n: setattr(n.node("conv"), "recurrent", np.zeros((25, 25), np.int64)), "conv.*not \\[75, 75\\]"),
    (lambda n: setattr(n.node("conv"), "recurrent", np.full((75, 75), np.nan)), "conv.*NaN"),
    (lambda n: setattr(n.node("conv"), "recurrent", np.full((75, 75), 0.5)), "conv.*integers"),
    (lambda n: setattr(n.node("conv"), "recurrent", [[0] * 75] * 75), "conv.*numeric array"),
    (lambda n: setattr(n.node("readout"), "recurrent", np.zeros((3, 3), np.int64)), "readout.*spiking"),
    (lambda n: setattr(n.node("flatten"), "recurrent", np.zeros((75, 75), np.int64)), "flatten.*spiking"),
    (lambda n: n.node("conv").delay.__setitem__((0, 0, 0), -1), "conv.*0\\.\\.1000"),
    (lambda n: n.node("conv").delay.__setitem__((0, 0, 0), ir.MAX_DELAY + 1), "conv.*0\\.\\.1000"),
    (lambda n: setattr(n.node("conv"), "delay", np.zeros((3, 5, 5), np.int64)), "conv.*one per input element"),
    (lambda n: setattr(n.node("conv"), "delay", np.zeros((2, 5, 5))), "conv.*integer array"),
    (lambda n: setattr(n.node("flatten"), "delay", np.zeros((3, 5, 5), np.int64)), "flatten.*conv2d or linear"),
])
def test_validation_refuses(change, message):
    with pytest.raises(InputError, match=message):
        _broken(change).validate()


def test_load_refuses_a_bad_delay_in_a_file(tmp_path):
    net = dense_net(True, recurrent=True, delay=True)
    net.node("fc").delay = -net.node("fc").delay - 1
    ir.save(net, tmp_path)
    with pytest.raises(InputError, match="fc.*delays"):
        ir.load(tmp_path)


# --- ONNX ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, recurrent, delay", CASES)
def test_onnx_models_equal_the_reference(name, recurrent, delay):
    from snnc import onnx_graph
    from snnc.backends import onnx_backend

    net = NETWORKS[name](True, recurrent=recurrent, delay=delay)
    inputs = per_step_inputs(net)
    expected = execute.run(net, inputs)
    _assert_active(expected.spikes)
    whole = onnx_backend.run(net, inputs)
    steps = onnx_backend.run_steps(onnx_graph.fixed_model(net, stepwise=True), inputs)
    explicit = onnx_backend.run_steps(onnx_graph.fixed_model(net, stepwise=True), inputs,
                                      onnx_backend.initial_state(net, B))
    for trace in (whole, steps, explicit):
        assert trace.spikes.keys() == expected.spikes.keys()
        for layer in expected.spikes:
            assert np.array_equal(trace.spikes[layer], expected.spikes[layer]), layer
        assert np.array_equal(trace.readout_steps, expected.readout_steps)
        assert np.array_equal(trace.readout, expected.readout)
    for model in (onnx_graph.fixed_model(net), onnx_graph.fixed_model(net, stepwise=True)):
        onnx_graph.check(model)


def test_onnx_splits_recurrent_weights_into_exact_planes():
    """A recurrent matrix whose partial sums pass the float32 limit (lowered here) is split into
    weight planes and stays exact."""
    from snnc import onnx_graph
    from snnc.backends import onnx_backend

    net = conv_net(True, recurrent=True, delay=True)
    inputs = per_step_inputs(net)
    model = onnx_graph.fixed_model(net, spikes=True, limit=2 ** 12)
    assert any("recurrent.plane" in init.name for init in model.graph.initializer)
    trace = onnx_backend.run_session(onnx_backend.session(model), inputs)
    assert np.array_equal(trace.spikes["conv"], execute.run(net, inputs).spikes["conv"])


def test_float_onnx_follows_the_float_reference():
    """model_float.onnx (float32) against the float64 reference: recurrent and delayed."""
    from snnc import onnx_graph
    from snnc.backends import onnx_backend

    net = conv_net(False, recurrent=True, delay=True)
    units = np.random.default_rng(5).integers(0, 256, (T, B) + net.input_node.shape)
    expected = execute.run(net, units * net.encoding["scale"])
    outputs = onnx_backend.session(onnx_graph.float_model(net, spikes=True)).run(None, {"input": units})
    spikes = dict(zip(["readout", "readout_steps", "conv"], outputs))["conv"]
    assert np.mean(spikes == expected.spikes["conv"]) > 0.99
    assert np.array_equal(spikes[:2], expected.spikes["conv"][:2])


# --- exporters -----------------------------------------------------------------------------------

def test_nir_writes_the_recurrent_loop_and_the_delays(tmp_path):
    import nir

    from snnc.exporters.nir_export import export_nir

    dt = 1e-3
    net = dense_net(False, recurrent=True, delay=True)
    export_nir(net, tmp_path / "net.nir", dt=dt)
    graph = nir.read(tmp_path / "net.nir")
    neuron = next(key for key in graph.nodes if key.startswith("fc."))
    assert isinstance(graph.nodes[neuron], nir.CubaLIF)
    assert ("input", "fc.delay") in graph.edges and ("fc.delay", "fc") in graph.edges
    assert (neuron, "fc.recurrent") in graph.edges and ("fc.recurrent", neuron) in graph.edges
    assert ("input", "fc") not in graph.edges
    np.testing.assert_allclose(graph.nodes["fc.delay"].delay, np.arange(6) * dt)
    assert np.array_equal(graph.nodes["fc.recurrent"].weight, net.node("fc").recurrent)
    assert float(graph.metadata["dt"]) == dt


def test_nir_refuses_a_recurrent_conv_population():
    from snnc.exporters.nir_export import export_nir

    with pytest.raises(InputError, match="node 'conv': recurrent weights on a \\[3, 5, 5\\] population"):
        export_nir(conv_net(False, recurrent=True))


@pytest.mark.parametrize("recurrent, delay, message", [(True, False, "recurrent synapses outside a spiking dense"),
                                                       (False, True, "axonal delays that netx holds neither")])
def test_netx_refuses_recurrence_and_delays_on_a_conv(tmp_path, recurrent, delay, message):
    """netx holds recurrence only as dense_rec and delays only on dense layers (it ignores conv
    delays); tests/test_netx_lavadl.py writes both where netx holds them."""
    from snnc.errors import DesignRuleError
    from snnc.exporters.netx_export import export_netx

    net = conv_net(True, recurrent=recurrent, delay=delay)
    with pytest.raises(DesignRuleError, match=f"layer 'conv': {message}"):
        export_netx(net, tmp_path / "network.net")
    assert not (tmp_path / "network.net").exists()


def test_summary_counts_recurrent_synapses_and_shows_delays():
    from snnc.summary import layer_rows

    net = conv_net(True, recurrent=True, delay=True)
    row = next(r for r in layer_rows(net) if r["layer"] == "conv")
    plain = next(r for r in layer_rows(conv_net(True, recurrent=False)) if r["layer"] == "conv")
    assert row["synapses"] - plain["synapses"] == np.count_nonzero(net.node("conv").recurrent)   # as mapped
    assert "+recurrent" in row["neuron"] and row["op"].startswith("conv2d delay<=")


def test_onnx_reference_evaluator_agrees():
    """onnx's own ReferenceEvaluator, an independent runtime, on model.onnx and one step of
    model_step.onnx (its states fed explicitly)."""
    from onnx.reference import ReferenceEvaluator

    from snnc import onnx_graph
    from snnc.backends import onnx_backend

    net = conv_net(True, recurrent=True, delay=True)
    inputs = per_step_inputs(net)
    expected = execute.run(net, inputs)
    model = onnx_graph.fixed_model(net, spikes=True)
    names = [output.name for output in model.graph.output]
    result = dict(zip(names, ReferenceEvaluator(model).run(None, {"input": inputs.astype(np.int64)})))
    assert np.array_equal(result["conv"], expected.spikes["conv"])
    assert np.array_equal(result["readout_steps"], expected.readout_steps)
    step = onnx_graph.fixed_model(net, stepwise=True)
    names = [output.name for output in step.graph.output]
    state = onnx_backend.initial_state(net, B)
    for t in range(3):
        result = dict(zip(names, ReferenceEvaluator(step).run(None, {"input": inputs[t].astype(np.int64), **state})))
        state = {"state." + k[len("next."):]: v for k, v in result.items() if k.startswith("next.")}
        assert np.array_equal(result["conv"], expected.spikes["conv"][t]), t


def test_nir_round_trip_keeps_recurrence_and_delays(tmp_path):
    """snnc -> NIR -> snnc: the recurrent loop and the Delay nodes come back as the same fields,
    and the network spikes as before."""
    from snnc.exporters.nir_export import export_nir
    from snnc.frontends.nir_frontend import load_nir

    net = dense_net(False, recurrent=True, delay=True)
    export_nir(net, tmp_path / "net.nir", dt=1e-3)
    back = load_nir(tmp_path / "net.nir")
    inputs = per_step_inputs(net)
    expected, got = execute.run(net, inputs), execute.run(back, inputs)
    for name, spikes in expected.spikes.items():
        np.testing.assert_array_equal(got.spikes[name], spikes)
    np.testing.assert_allclose(got.readout, expected.readout, rtol=1e-12)
