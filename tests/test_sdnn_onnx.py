"""Sigma-delta populations (lava-dl's SDNN, snnc.fixedpoint.sigma_delta_step) in the ONNX backend.

lava-dl's golden pilotnet_sdnn network (netx import, free-running): model.onnx and model_step.onnx
reproduce lava-dl's golden readout and every sigma-delta layer's messages of snnc.execute.run,
message for message. A hand-built network with signed inputs, a Delta encoder, ReLU and identity
activations, negative biases, non-zero thresholds (residues), message shifts, an initial sigma, a
sum pool of messages and an integrator taking its input unshifted does the same on several
samples, also under onnx's ReferenceEvaluator. Its messages are large enough that the synapses
reading them split their inputs into digits (onnx_graph.split_sum).
"""
import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from lavadl import NETX_TESTS
from snnc import execute, onnx_graph
from snnc.backends import onnx_backend
from snnc.frontends.netx import load_netx
from snnc.ir import Network, Neuron, Node
from snnc.passes.quantize import largest_outputs
from snnc.targets import load_target

PILOTNET = NETX_TESTS / "gts" / "pilotnet_sdnn"
T = 9


def assert_messages_equal(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, messages in expected.items():
        assert got[name].dtype == messages.dtype == np.int32, name
        assert got[name].shape == messages.shape, name
        mismatch = np.argwhere(got[name] != messages)
        assert mismatch.size == 0, f"layer {name}: {len(mismatch)} messages differ, first at {mismatch[0]}"


def assert_graded(net: Network, trace) -> None:
    """The comparison means something: messages are signed, graded beyond a byte, and sparse."""
    assert all(node.neuron.kind == "sigma_delta" for node in net.spiking_nodes())
    messages = np.concatenate([trace.spikes[node.name].ravel() for node in net.spiking_nodes()])
    assert (messages < 0).any() and (messages > 255).any() and (messages == 0).any()
    assert all(counts == {"current": 0, "voltage": 0} for counts in trace.overflow.values())


def uses_input_digits(net: Network) -> bool:
    largest = largest_outputs(net)
    return any(onnx_graph.split_sum(node.weight, largest[node.inputs[0]])[0] > 1
               for node in net.nodes if node.op in ("conv2d", "linear"))


def _case(net: Network, inputs: np.ndarray):
    """(network, inputs, the reference's trace), checked to be graded and to need input digits."""
    ref = execute.run(net, inputs)
    assert_graded(net, ref)
    assert uses_input_digits(net)
    return net, inputs, ref


# --------------------------------------------------------------------------- pilotnet_sdnn

@pytest.fixture(scope="module")
def pilotnet():
    net = load_netx(PILOTNET / "network.net", T=T, timing="free-running")
    frame = np.load(PILOTNET / "input.npy")[..., 0].transpose(2, 1, 0)   # Lava's (x, y, c) -> (c, y, x)
    return _case(net, np.broadcast_to(frame, (T, 1) + frame.shape).astype(np.int64))


def test_pilotnet_model_reproduces_the_golden_output_and_every_message(pilotnet):
    net, inputs, ref = pilotnet
    model = onnx_graph.fixed_model(net, spikes=True)
    onnx_graph.check(model)
    trace = onnx_backend.run_session(onnx_backend.session(model), inputs)
    assert np.array_equal(trace.readout_steps[:, 0, :].T, np.load(PILOTNET / "output.npy"))
    assert np.array_equal(trace.readout, ref.readout)
    assert_messages_equal(trace.spikes, ref.spikes)


def test_pilotnet_step_model_reproduces_the_golden_output_and_every_message(pilotnet):
    net, inputs, ref = pilotnet
    step = onnx_graph.fixed_model(net, stepwise=True)
    onnx_graph.check(step)
    trace = onnx_backend.run_steps(step, inputs, onnx_backend.initial_state(net, 1))
    assert np.array_equal(trace.readout_steps[:, 0, :].T, np.load(PILOTNET / "output.npy"))
    assert_messages_equal(trace.spikes, ref.spikes)


# --------------------------------------------------------------------------- hand-built

def sigma_delta(rng, shape, threshold, bias, input_shift, message_shift, relu=True, accumulate=True,
                initial=0) -> Neuron:
    """A sigma-delta population with random per-neuron thresholds and biases in the given ranges."""
    return Neuron(kind="sigma_delta", threshold=rng.integers(*threshold, shape), reset="none", reset_amount=None,
                  bias=rng.integers(*bias, shape), initial_state=rng.integers(-initial, initial + 1, shape),
                  input_shift=input_shift, activation="relu" if relu else "identity", accumulate=accumulate,
                  message_shift=message_shift)


def sdnn_network(seed=0) -> Network:
    """input (2, 6, 6), signed -> enc (Delta encoder) -> conv (4, 6, 6, ReLU) -> sumpool 2 ->
    flatten -> fc (10, identity, initial sigma) -> readout (3, integrator, input unshifted)."""
    rng = np.random.default_rng(seed)
    conv = {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]}
    target = load_target("loihi2")
    return Network(name="sdnn", T=8, readout="last", arithmetic=dict(target.arithmetic, kind="fixed"),
                   encoding={"kind": "direct", "min": -200, "max": 200}, metadata={"target": target.name}, nodes=[
        Node("input", "input", [], (2, 6, 6)),
        Node("enc", "conv2d", ["input"], (2, 6, 6), attrs={"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0]},
             weight=np.eye(2, dtype=np.int64).reshape(2, 2, 1, 1),
             neuron=sigma_delta(rng, (2, 6, 6), (200, 400), (0, 1), 6, 3, relu=False, accumulate=False)),
        Node("conv", "conv2d", ["enc"], (4, 6, 6), attrs=conv, weight=rng.integers(-40, 41, (4, 2, 3, 3)),
             neuron=sigma_delta(rng, (4, 6, 6), (2_000, 8_000), (-30_000, 5_000), 0, 6)),
        Node("pool", "sumpool", ["conv"], (4, 3, 3), attrs={"kernel": 2, "stride": 2}),
        Node("flatten", "flatten", ["pool"], (36,)),
        Node("fc", "linear", ["flatten"], (10,), weight=rng.integers(-40, 41, (10, 36)),
             neuron=sigma_delta(rng, (10,), (1_000, 20_000), (-50_000, 20_000), 1, 4, relu=False,
                                initial=30_000)),
        Node("readout", "linear", ["fc"], (3,), weight=rng.integers(-40, 41, (3, 10)),
             neuron=Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                           bias=np.zeros(3, np.int64), initial_state=np.zeros(3, np.int64), v_decay=0, u_decay=4095,
                           input_shift=0)),
    ])


@pytest.fixture(scope="module")
def sdnn():
    net = sdnn_network()
    rng = np.random.default_rng(1)
    return _case(net, rng.integers(-200, 201, (net.T, 4) + tuple(net.input_node.shape)))   # a new frame every step


def test_hand_built_model_equals_the_reference_message_for_message(sdnn):
    net, inputs, ref = sdnn
    model = onnx_graph.fixed_model(net, spikes=True)
    onnx_graph.check(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64   # signed input
    trace = onnx_backend.run(net, inputs)
    assert_messages_equal(trace.spikes, ref.spikes)
    assert np.array_equal(trace.readout_steps, ref.readout_steps)
    assert np.array_equal(trace.readout, ref.readout)


def test_hand_built_step_model_equals_the_reference(sdnn):
    net, inputs, ref = sdnn
    step = onnx_graph.fixed_model(net, stepwise=True)
    onnx_graph.check(step)
    state = onnx_backend.initial_state(net, inputs.shape[1])
    assert {"state.fc.sigma", "state.fc.act", "state.fc.residue", "state.readout.u"} <= set(state)
    assert np.array_equal(state["state.fc.sigma"][0], net.node("fc").neuron.initial_state)
    for trace in (onnx_backend.run_steps(step, inputs, state), onnx_backend.run_steps(step, inputs)):
        assert_messages_equal(trace.spikes, ref.spikes)
        assert np.array_equal(trace.readout_steps, ref.readout_steps)


def test_reference_evaluator_agrees_on_both_models(sdnn):
    """onnx's own ReferenceEvaluator, an independent runtime: model.onnx over all steps, and
    model_step.onnx for three steps with its sigma, act and residue fed back."""
    net, inputs, ref = sdnn
    inputs = inputs[:, :2]
    model = onnx_graph.fixed_model(net, spikes=True)
    names = [output.name for output in model.graph.output]
    result = dict(zip(names, ReferenceEvaluator(model).run(None, {"input": inputs})))
    assert_messages_equal({name: result[name] for name in ref.spikes},
                          {name: messages[:, :2] for name, messages in ref.spikes.items()})
    step = onnx_graph.fixed_model(net, stepwise=True)
    names = [output.name for output in step.graph.output]
    evaluator, state = ReferenceEvaluator(step), onnx_backend.initial_state(net, 2)
    for t in range(3):
        result = dict(zip(names, evaluator.run(None, {"input": inputs[t], **state})))
        state = {"state." + k[len("next."):]: v for k, v in result.items() if k.startswith("next.")}
        assert_messages_equal({name: result[name] for name in ref.spikes},
                              {name: messages[t, :2] for name, messages in ref.spikes.items()})
