"""Graded multi-spike populations (Neuron.max_spikes M > 1) in the IR, the fixed-point rule, the
float and fixed reference, quantization and bounds, and the netx exporter.

The fixed rule is checked on hand-worked values (fixedpoint.spike_count, and one dense layer whose
counts per step are written out below); the float reference against a plain numpy step loop
written here from docs/ir.md; quantization keeps the counts' largest value M in every bound. The
fixed reference of larger networks against a loop is in tests/test_multispike_backends.py, the
ONNX models count for count in tests/test_multispike_onnx.py, the NIR round trip in
tests/test_nir_semantics.py.
"""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnc import execute, fixedpoint, ir
from snnc.errors import DesignRuleError, InputError
from snnc.exporters.netx_export import export_netx
from snnc.ir import Network, Neuron, Node
from snnc.passes import fold_all
from snnc.passes.quantize import bound_analysis, largest_outputs, quantize, recurrent_sums
from snnc.targets import load_target
from test_multispike_backends import multispike_conv, multispike_dense
from test_multispike_onnx import float_conv, float_dense

LOIHI2 = load_target("loihi2")
SHIFT = LOIHI2.arithmetic["activation_shift"]


# --------------------------------------------------------------------------- the fixed rule

def test_spike_count_by_hand():
    """Fire level 10, at most 3: below the level nothing (negative v too), then v // 10, capped."""
    v = np.array([-25, -1, 0, 9, 10, 19, 20, 29, 30, 31, 45, 10_000], np.int64)
    assert fixedpoint.spike_count(v, np.int64(10), 3).tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
    assert fixedpoint.spike_count(v, np.int64(10), 1).tolist() == [False] * 4 + [True] * 8   # binary: unchanged
    assert fixedpoint.spike_count(np.int64(7), np.int64(0), 4) == 4   # level 0 (unvalidated): divisor 1


def _one_layer(reset: str, fire_rule: str, max_spikes: int) -> Network:
    """input (1 pixel) -> fc (5 neurons, fire level L = 4 << shift; from a pixel of 1, drives of
    1.5 L, 2.5 L, 0.75 L and 5 L per step, and none for a fifth neuron starting at 2 L - 1) -> readout."""
    level = 4 << SHIFT
    neurons = Neuron(kind="spiking", threshold=np.full(5, level - fixedpoint.fire_offset(fire_rule), np.int64),
                     reset=reset, reset_amount=np.full(5, level, np.int64) if reset == "soft" else None,
                     bias=np.zeros(5, np.int64), initial_state=np.array([0, 0, 0, 0, 2 * level - 1], np.int64),
                     v_decay=0, u_decay=4095, max_spikes=max_spikes)
    readout = Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None, bias=np.zeros(1, np.int64),
                     initial_state=np.zeros(1, np.int64), v_decay=0, u_decay=4095)
    return Network(name="one_layer", T=6, readout="mean", arithmetic=dict(LOIHI2.arithmetic, kind="fixed",
                                                                          fire_rule=fire_rule),
                   encoding={"scale": 1 / 255, "max": 255}, metadata={}, nodes=[
                       Node("input", "input", [], (1,)),
                       Node("fc", "linear", ["input"], (5,), weight=np.array([[6], [10], [3], [20], [0]]),
                            neuron=neurons),
                       Node("readout", "linear", ["fc"], (1,), weight=np.ones((1, 5), np.int64), neuron=readout)])


# Counts per step of the five neurons (rows: steps), worked out by hand from the contract:
# soft reset, v_t = residue + drive, n = min(v // L, M), residue = v - n L.
HAND_COUNTS = {
    ("soft", 3): [[1, 2, 0, 3, 1], [2, 3, 1, 3, 0], [1, 2, 1, 3, 0], [2, 3, 1, 3, 0], [1, 2, 0, 3, 0], [2, 3, 1, 3, 0]],
    ("soft", 1): [[1, 1, 0, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 0, 1, 0], [1, 1, 1, 1, 0]],
    # hard reset: v_t = (0 if the neuron fired at t - 1 else v_{t-1}) + drive
    ("hard", 3): [[1, 2, 0, 3, 1], [1, 2, 1, 3, 0], [1, 2, 0, 3, 0], [1, 2, 1, 3, 0], [1, 2, 0, 3, 0], [1, 2, 1, 3, 0]],
}


@pytest.mark.parametrize("fire_rule", [">=", ">"])
@pytest.mark.parametrize("reset, max_spikes", sorted(HAND_COUNTS))
def test_reference_counts_equal_hand_worked_steps(reset, max_spikes, fire_rule):
    net = _one_layer(reset, fire_rule, max_spikes)
    net.validate()
    trace = execute.run(net, np.ones((net.T, 2, 1), np.int64))
    expected = np.array(HAND_COUNTS[reset, max_spikes], np.uint8)
    assert trace.spikes["fc"].dtype == np.uint8
    np.testing.assert_array_equal(trace.spikes["fc"], np.stack([expected, expected], axis=1))
    # the readout reads the counts as values: one unit each, shifted into the current
    np.testing.assert_array_equal(trace.readout_steps[:, 0, 0], np.cumsum(expected.sum(1)) << SHIFT)


def test_recorded_voltages_are_the_residues_after_a_count():
    net = _one_layer("soft", ">=", 3)
    level = 4 << SHIFT
    trace = execute.run(net, np.ones((net.T, 1, 1), np.int64), record_voltages=("fc",))
    # neuron 3 (drive 5 L, at most 3 per step) keeps 2 L more every step
    np.testing.assert_array_equal(trace.voltages["fc"][:, 0, 3], 2 * level * np.arange(1, net.T + 1))


# --------------------------------------------------------------------------- the float rule

def _float_loop(net: Network, inputs: np.ndarray) -> tuple[dict, np.ndarray]:
    """Counts of every spiking node and the readout's per-step H, from docs/ir.md's float rule as a
    plain loop over steps: I = (1 - u_decay) I + z, H = (1 - v_decay) U + I + bias,
    n = min(floor(H / threshold), M) where H >= threshold, soft U = H - n r, hard U = 0 where n > 0."""
    T, B = inputs.shape[:2]
    outputs = {net.input_node.name: inputs.astype(np.float64)}
    for node in net.nodes[1:]:
        source = outputs[node.inputs[0]]
        if node.op == "flatten":
            outputs[node.name] = source.reshape(T, B, -1)
            continue
        n, shape = node.neuron, (B,) + tuple(node.shape)
        current, v = np.zeros(shape), np.broadcast_to(n.initial_state, shape).astype(np.float64)
        counts, out = np.zeros(shape), np.zeros((T,) + shape)
        for t in range(T):
            x = torch.from_numpy(source[t])
            weight = torch.from_numpy(np.asarray(node.weight, np.float64))
            z = (x @ weight.T if node.op == "linear" else
                 F.conv2d(x, weight, stride=node.attrs["stride"], padding=node.attrs["padding"])).numpy()
            if node.bias is not None:
                z = z + np.asarray(node.bias).reshape((-1,) + (1,) * (z.ndim - 2))
            if node.recurrent is not None:
                z = z + (counts.reshape(B, -1) @ np.asarray(node.recurrent).T).reshape(shape)
            current = (1.0 - n.u_decay) * current + z
            v = (1.0 - n.v_decay) * v + current + n.bias
            if n.kind == "spiking":
                counts = np.where(v >= n.threshold, np.minimum(np.floor(v / n.threshold), n.max_spikes), 0.0)
                v = v - counts * n.reset_amount if n.reset == "soft" else np.where(counts > 0, 0.0, v)
                out[t] = counts
            else:
                out[t] = v
        outputs[node.name] = out
    return ({node.name: outputs[node.name] for node in net.spiking_nodes()}, outputs[net.output_node.name])


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("builder", [float_dense, float_conv])
def test_float_reference_equals_the_float_rule_step_by_step(builder, reset):
    net = builder(reset)
    net.validate()
    rng = np.random.default_rng(5)
    shape = (4,) + tuple(net.input_node.shape)
    frames = rng.integers(0, 32, shape) * (rng.random(shape) < 0.7) * net.encoding["scale"]
    inputs = np.broadcast_to(frames, (net.T,) + shape)
    trace = execute.run(net, inputs)
    counts, readout_steps = _float_loop(net, inputs)
    for node in net.spiking_nodes():
        got, expected = trace.spikes[node.name], counts[node.name]
        assert (expected > 1).any() and (expected == 0).any() and expected.max() <= node.neuron.max_spikes
        mismatch = np.argwhere(got != expected)
        assert mismatch.size == 0, f"{node.name}: {len(mismatch)} counts differ, first at {mismatch[0]}"
    np.testing.assert_allclose(trace.readout_steps, readout_steps, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- quantization and bounds

@pytest.fixture(scope="module", params=["soft", "hard"])
def quantized(request):
    net = float_dense(request.param)
    net.validate()
    fixed = quantize(fold_all(net), LOIHI2)
    fixed.validate()
    return net, fixed


def test_quantized_populations_keep_their_counts_and_follow_the_float_network(quantized):
    net, fixed = quantized
    assert {n.name: n.neuron.max_spikes for n in fixed.nodes if n.neuron} == {"fc1": 3, "fc2": 4, "readout": 1}
    images = np.random.default_rng(7).integers(0, 32, (16,) + tuple(net.input_node.shape))
    float_trace = execute.run(net, execute.encode(net, images))
    fixed_trace = execute.run(fixed, execute.encode(fixed, images))
    for name, counts in float_trace.spikes.items():
        assert (fixed_trace.spikes[name] > 1).any()
        assert (fixed_trace.spikes[name] == counts).mean() > 0.9, name   # rounding moves a few counts


def test_bounds_read_a_multispike_population_as_values_up_to_max_spikes(quantized):
    _, fixed = quantized
    assert largest_outputs(fixed) == {"input": 255, "fc1": 3, "fc2": 4, "readout": 1}
    fc2 = fixed.node("fc2")
    assert fixedpoint.current_keep(fc2.neuron.u_decay, fixed.arithmetic["decay_bits"]) == 0   # u = one step's input
    weight = np.asarray(fc2.weight, np.int64)
    most = max(np.clip(weight, 0, None).sum(1).max(), np.clip(-weight, 0, None).sum(1).max())
    report = {row["layer"]: row for row in bound_analysis(fixed)}
    assert report["fc2"]["max_abs_current"] == most * 3 << SHIFT   # fc1 fires up to 3 per step
    positive, negative = recurrent_sums(fixed.node("fc1"))         # its own counts fed back, up to 3
    recurrent = np.asarray(fixed.node("fc1").recurrent, np.int64)
    np.testing.assert_array_equal(positive, np.clip(recurrent, 0, None).sum(1) * 3)
    np.testing.assert_array_equal(negative, np.clip(-recurrent, 0, None).sum(1) * 3)


def test_float32_ops_count_inputs_up_to_max_spikes():
    """fc2 reads fc1's counts (up to 3): sum |w| x 1 fits float32's exact integers, x 3 does not."""
    net = multispike_dense("soft")
    net.node("fc2").weight = np.full((8, 12), 1 << 20, np.int64)   # 12 x 2^20 < 2^24 < 3 x 12 x 2^20
    assert "fc2" not in execute.float32_ops(net)
    net.node("fc1").neuron.max_spikes = 1
    assert "fc2" in execute.float32_ops(net)


# --------------------------------------------------------------------------- the IR

def test_ir_round_trip_keeps_counts_and_writes_the_field_only_where_not_one(tmp_path):
    net = multispike_conv("soft")
    ir.save(net, tmp_path)
    doc = json.loads((tmp_path / "network.json").read_text())
    written = {entry["name"]: entry["neuron"].get("max_spikes") for entry in doc["nodes"] if entry["neuron"]}
    assert written == {"conv1": 3, "conv2": 2, "fc": 3, "readout": None}
    back = ir.load(tmp_path)
    assert [n.neuron.max_spikes for n in back.nodes if n.neuron] == [3, 2, 3, 1]
    inputs = np.random.default_rng(2).integers(0, 32, (net.T, 2) + tuple(net.input_node.shape))
    expected = execute.run(net, inputs).spikes
    for name, counts in execute.run(back, inputs).spikes.items():
        np.testing.assert_array_equal(counts, expected[name])


def test_binary_networks_are_written_as_before_and_old_files_load_as_binary(tmp_path):
    net = multispike_dense("hard")
    for node in net.spiking_nodes():
        node.neuron.max_spikes = 1
    paths = ir.save(net, tmp_path)
    assert "max_spikes" not in paths[0].read_text()   # a file older snnc versions wrote, byte for byte
    assert all(n.neuron.max_spikes == 1 for n in ir.load(tmp_path).nodes if n.neuron)


def _with(neuron_change: dict, node_name: str = "fc1", builder=multispike_dense) -> Network:
    net = builder()
    neuron = net.node(node_name).neuron
    for key, value in neuron_change.items():
        setattr(neuron, key, value(neuron) if callable(value) else value)
    return net


@pytest.mark.parametrize("change, node_name, message", [
    ({"max_spikes": 0}, "fc1", "max_spikes must be an integer in 1..255"),
    ({"max_spikes": 256}, "fc1", "max_spikes must be an integer in 1..255"),
    ({"max_spikes": 2.5}, "fc1", "max_spikes must be an integer in 1..255"),
    ({"max_spikes": 3.0}, "fc1", "max_spikes must be an integer in 1..255"),
    ({"max_spikes": True}, "fc1", "max_spikes must be an integer in 1..255"),
    ({"max_spikes": "3"}, "fc1", "max_spikes must be an integer in 1..255"),
    ({"max_spikes": 2}, "readout", "need a spiking population"),
    ({"mpr": True}, "fc1", "without MPR"),
    ({"threshold": lambda n: np.where(np.arange(12) == 5, 0, n.threshold)}, "fc1", "thresholds above 0"),
    ({"threshold": lambda n: -n.threshold}, "fc2", "thresholds above 0"),
])
def test_validation_refuses_bad_counts_naming_the_node(change, node_name, message):
    with pytest.raises(InputError, match=f"node '{node_name}': .*{message}"):
        _with(change, node_name).validate()


def test_largest_count_and_positive_thresholds_are_accepted():
    _with({"max_spikes": ir.MAX_SPIKES_PER_STEP}).validate()
    _with({"max_spikes": np.int64(7)}).validate()


def test_a_file_with_a_bad_count_is_refused_in_one_line(tmp_path):
    ir.save(multispike_dense(), tmp_path)
    path = tmp_path / "network.json"
    path.write_text(path.read_text().replace('"max_spikes": 3', '"max_spikes": 300'))
    with pytest.raises(InputError, match="node 'fc1': max_spikes must be an integer in 1..255, got 300"):
        ir.load(tmp_path)


# --------------------------------------------------------------------------- exporters

def test_netx_refuses_a_multispike_layer_naming_it(tmp_path):
    net = multispike_conv("hard")
    for node in net.nodes:   # netx's own refusals of recurrence come first: leave only the counts
        node.recurrent = None
    with pytest.raises(DesignRuleError, match="conv1.*several spikes per step") as refused:
        export_netx(net, tmp_path / "multi.net")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "multi.net").exists()
