"""Graded multi-spike populations (neuron.max_spikes > 1) in the ONNX backend.

Fixed point: hand-built dense and conv networks (tests/test_multispike_backends.py's, whose
reference is checked there against the contract written as a plain loop) with counts up to 2..4,
soft and hard reset, a conv reading counts, sum pooling of counts and a recurrent multi-spike
layer: model.onnx, model_step.onnx and the spikes model equal snnc.execute.run count for count,
under onnxruntime and onnx's ReferenceEvaluator; synapses reading counts bound their partial sums
by max_spikes (their weights split into planes where only that bound reaches the limit).

Float: hand-built dense (recurrent) and conv networks whose every value is a short dyadic
fraction (weights in 1/8, thresholds powers of two, decays 1/2), so float32 and float64 compute
them exactly and model_float.onnx equals the float64 reference count for count.
"""
import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from snnc import execute, onnx_graph
from snnc.backends import onnx_backend
from snnc.ir import Network, Neuron, Node
from test_multispike_backends import NETWORKS, images

CONV = {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]}


def assert_counts_equal(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, counts in expected.items():
        assert got[name].shape == counts.shape, name
        mismatch = np.argwhere(got[name] != counts)
        assert mismatch.size == 0, f"layer {name}: {len(mismatch)} counts differ, first at {mismatch[0]}"


def assert_graded(net: Network, spikes: dict) -> None:
    """The comparison means something: every multi-spike layer fires counts above 1, and zeros."""
    for node in net.spiking_nodes():
        counts = spikes[node.name]
        assert node.neuron.max_spikes > 1 and (counts > 1).any() and (counts == 0).any(), node.name
        assert counts.max() <= node.neuron.max_spikes, node.name


def evaluator_outputs(model: onnx.ModelProto, feeds: dict) -> dict:
    names = [output.name for output in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))


# --------------------------------------------------------------------------- fixed point

@pytest.fixture(scope="module", params=sorted(NETWORKS))
def case(request):
    builder, reset = NETWORKS[request.param]
    net = builder(reset)
    inputs = images(net)
    ref = execute.run(net, inputs)
    assert_graded(net, ref.spikes)
    return net, inputs, ref


def test_model_equals_the_reference_count_for_count(case):
    net, inputs, ref = case
    model = onnx_graph.fixed_model(net, spikes=True)
    onnx_graph.check(model)
    trace = onnx_backend.run_session(onnx_backend.session(model), inputs)
    assert_counts_equal(trace.spikes, ref.spikes)
    assert np.array_equal(trace.readout_steps, ref.readout_steps)
    assert np.array_equal(trace.readout, ref.readout)


def test_model_without_spikes_has_the_reference_readout(case):
    net, inputs, ref = case
    trace = onnx_backend.run_session(onnx_backend.session(onnx_graph.fixed_model(net, spikes=False)), inputs)
    assert trace.spikes == {}
    assert np.array_equal(trace.readout, ref.readout)


def test_step_model_run_T_times_equals_the_reference(case):
    net, inputs, ref = case
    step = onnx_graph.fixed_model(net, stepwise=True)
    onnx_graph.check(step)
    trace = onnx_backend.run_steps(step, inputs)
    assert_counts_equal(trace.spikes, ref.spikes)
    assert np.array_equal(trace.readout_steps, ref.readout_steps)


@pytest.mark.parametrize("name", ["multispike_conv_soft", "multispike_dense_hard"])
def test_reference_evaluator_agrees_on_both_fixed_models(name):
    """onnx's own ReferenceEvaluator, an independent runtime: model.onnx over all steps, and
    model_step.onnx for three steps with its states fed back (the recurrent layer's counts among them)."""
    builder, reset = NETWORKS[name]
    net = builder(reset)
    inputs = images(net, count=2)
    ref = execute.run(net, inputs)
    result = evaluator_outputs(onnx_graph.fixed_model(net, spikes=True), {"input": inputs})
    assert_counts_equal({k: result[k] for k in ref.spikes}, ref.spikes)
    step = onnx_graph.fixed_model(net, stepwise=True)
    state = onnx_backend.initial_state(net, inputs.shape[1])
    for t in range(3):
        result = evaluator_outputs(step, {"input": inputs[t], **state})
        state = {"state." + k[len("next."):]: v for k, v in result.items() if k.startswith("next.")}
        assert_counts_equal({k: result[k] for k in ref.spikes}, {k: v[t] for k, v in ref.spikes.items()})


@pytest.mark.parametrize("name, layer, recurrent", [("multispike_dense_soft", "fc2", False),
                                                    ("multispike_conv_hard", "fc", True)])
def test_synapses_reading_counts_bound_their_sums_by_max_spikes(name, layer, recurrent):
    """A float32 limit that the weights' partial sums reach with inputs up to max_spikes (3) but
    not with binary spikes: the weights reading the counts (fed forward, or the recurrent loop)
    are split into planes, and the counts stay exact."""
    builder, reset = NETWORKS[name]
    net = builder(reset)
    net.encoding = dict(net.encoding, max=31)   # images() draws pixels 0..31: the input layer's planes stay small
    node = net.node(layer)
    if recurrent:
        node.recurrent = node.recurrent * 4     # above what the other synapses need at 1-bit planes
    weight = node.recurrent if recurrent else node.weight
    most = node.neuron.max_spikes if recurrent else net.node(node.inputs[0]).neuron.max_spikes
    bound = int(np.abs(np.asarray(weight, np.int64)).sum(axis=1).max())
    limit = 2 * bound
    assert most == 3 and bound < limit < most * bound
    model = onnx_graph.fixed_model(net, spikes=True, limit=limit)
    hint = f"{layer}/{'recurrent' if recurrent else 'weight'}.plane"
    assert any(init.name.startswith(hint) for init in model.graph.initializer)
    inputs = images(net)
    trace = onnx_backend.run_session(onnx_backend.session(model), inputs)
    assert_counts_equal(trace.spikes, execute.run(net, inputs).spikes)


# --------------------------------------------------------------------------- float

T_FLOAT = 6


def float_population(shape, threshold, max_spikes, reset, kind="spiking", v_decay=0.5) -> Neuron:
    """Dyadic parameters (threshold a power of two, decays 1/2, bias in 1/8): float32-exact."""
    spiking = kind == "spiking"
    level = np.full(shape, threshold, np.float64)
    bias = (np.arange(int(np.prod(shape))) % 3 - 1).reshape(shape) / 8.0
    return Neuron(kind=kind, threshold=level if spiking else None, reset=reset if spiking else "none",
                  reset_amount=level if spiking and reset == "soft" else None, bias=bias,
                  initial_state=np.zeros(shape), v_decay=v_decay if spiking else 0.0, u_decay=1.0,
                  max_spikes=max_spikes if spiking else 1)


def eighths(rng, shape, low, high) -> np.ndarray:
    return rng.integers(low * 8, high * 8 + 1, shape) / 8.0


def float_net(name: str, nodes: list[Node]) -> Network:
    return Network(name=name, T=T_FLOAT, readout="mean", nodes=nodes, arithmetic={"kind": "float"},
                   encoding={"scale": 1 / 16, "max": 255}, metadata={})


def float_dense(reset: str, seed=0) -> Network:
    """input (12) -> fc1 (10, counts up to 3, recurrent) -> fc2 (6, counts up to 4) -> readout (3)."""
    rng = np.random.default_rng(seed)
    return float_net(f"float_dense_{reset}", [
        Node("input", "input", [], (12,)),
        Node("fc1", "linear", ["input"], (10,), weight=eighths(rng, (10, 12), -1, 2),
             neuron=float_population((10,), 2.0, 3, reset),
             recurrent=eighths(rng, (10, 10), -1, 1) * (rng.random((10, 10)) < 0.5)),
        Node("fc2", "linear", ["fc1"], (6,), weight=eighths(rng, (6, 10), -1, 2), bias=eighths(rng, (6,), -1, 1),
             neuron=float_population((6,), 1.0, 4, reset)),
        Node("readout", "linear", ["fc2"], (3,), weight=eighths(rng, (3, 6), -1, 1),
             neuron=float_population((3,), None, 1, reset, kind="integrator")),
    ])


def float_conv(reset: str, seed=1) -> Network:
    """input (2, 5, 5) -> conv1 (3, 5, 5, counts up to 3) -> conv2 (3, 5, 5, counts up to 2, reads
    conv1's counts) -> flatten -> readout (3)."""
    rng = np.random.default_rng(seed)
    return float_net(f"float_conv_{reset}", [
        Node("input", "input", [], (2, 5, 5)),
        Node("conv1", "conv2d", ["input"], (3, 5, 5), attrs=dict(CONV), weight=eighths(rng, (3, 2, 3, 3), -1, 2),
             neuron=float_population((3, 5, 5), 2.0, 3, reset)),
        Node("conv2", "conv2d", ["conv1"], (3, 5, 5), attrs=dict(CONV), weight=eighths(rng, (3, 3, 3, 3), -1, 2),
             neuron=float_population((3, 5, 5), 4.0, 2, reset)),
        Node("flatten", "flatten", ["conv2"], (75,)),
        Node("readout", "linear", ["flatten"], (3,), weight=eighths(rng, (3, 75), -1, 1),
             neuron=float_population((3,), None, 1, reset, kind="integrator")),
    ])


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("builder", [float_dense, float_conv])
def test_float_model_equals_the_float_reference_count_for_count(builder, reset):
    net = builder(reset)
    net.validate()
    rng = np.random.default_rng(7)
    shape = (4,) + tuple(net.input_node.shape)
    units = np.broadcast_to(rng.integers(0, 32, shape) * (rng.random(shape) < 0.7), (net.T,) + shape)
    units = units.astype(np.int64)
    ref = execute.run(net, units * net.encoding["scale"])
    assert_graded(net, ref.spikes)
    model = onnx_graph.float_model(net, spikes=True)
    onnx_graph.check(model)
    names = [output.name for output in model.graph.output]
    result = dict(zip(names, onnx_backend.session(model).run(None, {"input": units})))
    assert_counts_equal({k: result[k] for k in ref.spikes}, ref.spikes)
    assert np.array_equal(result["readout_steps"], ref.readout_steps)
    evaluated = evaluator_outputs(model, {"input": units})
    assert_counts_equal({k: evaluated[k] for k in ref.spikes}, ref.spikes)
