"""The ONNX backend: model.onnx, model_step.onnx and the backend's run() equal the integer reference
spike for spike, on every recipe's topology; a second, independent implementation (onnx's
ReferenceEvaluator) agrees; files pass the full checker and are byte-identical across writes."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from netfactory import random_images, random_network, recipe
from snnc import execute, onnx_graph
from snnc.backends import get_backend, onnx_backend
from snnc.compiler import Compiled, compile_checkpoint, compile_network
from snnc.errors import InputError
from snnc.targets import load_target

MODELS = Path(__file__).resolve().parent.parent / "models"

# ResNet19 at full width takes ~15 s of reference time on 2 cores; a quarter of its widths keeps
# the topology (3-3-2 basic blocks, residual currents into neurons) at a fraction of the cost.
SMALL = {"resnet19": {"arch_params": {"channels": [32, 64, 128], "blocks": [3, 3, 2], "hidden": 64}}}
# the large topologies take seconds each: in the slow tier
RECIPES = ["mnist_srif", "mnist_lif"] + [pytest.param(name, marks=pytest.mark.slow)
                                         for name in ("sew_resnet18", "vgg16", "resnet19")]
SAMPLES = {"mnist_srif": 3, "mnist_lif": 3}


@pytest.fixture(scope="module")
def case(request):
    cache = {}

    def get(name: str, target: str = "loihi2"):
        if (name, target) not in cache:
            spec = recipe(name, **SMALL.get(name, {}))
            compiled = compile_network(random_network(spec, seed=1), load_target(target))
            inputs = execute.encode(compiled.fixed, random_images(spec, SAMPLES.get(name, 2), seed=2))
            cache[name, target] = (compiled, inputs, execute.run(compiled.fixed, inputs))
        return cache[name, target]
    return get


def assert_same(trace, ref, spikes=True):
    assert np.array_equal(trace.readout, ref.readout)
    assert np.array_equal(trace.readout_steps, ref.readout_steps)
    if spikes:
        assert sorted(trace.spikes) == sorted(ref.spikes)
        for name, expected in ref.spikes.items():
            assert trace.spikes[name].shape == expected.shape, name
            assert np.array_equal(trace.spikes[name], expected), name


def outputs(model, feeds):
    names = [output.name for output in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))


@pytest.mark.parametrize("name", RECIPES)
def test_model_equals_integer_reference(case, name):
    compiled, inputs, ref = case(name)
    model = onnx_graph.fixed_model(compiled.fixed, spikes=True)
    onnx.checker.check_model(model, full_check=True)
    trace = get_backend("onnx").run(compiled.fixed, inputs)
    assert_same(trace, ref)
    # the comparison means something: every layer of the random network fires, but not always
    rates = [spikes.mean() for spikes in ref.spikes.values()]
    assert min(rates) > 0 and max(rates) < 1


@pytest.mark.parametrize("name", ["mnist_srif", "mnist_lif", pytest.param("sew_resnet18", marks=pytest.mark.slow)])
def test_step_model_run_T_times_equals_model(case, name):
    compiled, inputs, ref = case(name)
    step = onnx_graph.fixed_model(compiled.fixed, stepwise=True)
    onnx.checker.check_model(step, full_check=True)
    assert_same(onnx_backend.run_steps(step, inputs), ref)   # default initial state (initializers)
    explicit = onnx_backend.initial_state(compiled.fixed, inputs.shape[1])
    assert_same(onnx_backend.run_steps(step, inputs, state=explicit), ref)
    sess = onnx_backend.session(step)
    declared = {i.name for i in step.graph.input}
    assert set(explicit) | {"input"} == declared
    produced = {o.name for o in sess.get_outputs()}
    assert produced == {"readout_step"} | set(ref.spikes) | {
        name.replace("state.", "next.", 1) for name in explicit}


@pytest.mark.parametrize("name", ["mnist_srif", "mnist_lif"])
def test_reference_evaluator_agrees(case, name):
    compiled, inputs, ref = case(name)
    result = outputs(onnx_graph.fixed_model(compiled.fixed, spikes=True), {"input": inputs})
    assert np.array_equal(result["readout"], ref.readout)
    assert np.array_equal(result["readout_steps"], ref.readout_steps)
    for layer, spikes in ref.spikes.items():
        assert np.array_equal(result[layer], spikes), layer
    step = onnx_graph.fixed_model(compiled.fixed, stepwise=True)
    state = onnx_backend.initial_state(compiled.fixed, inputs.shape[1])
    total = 0
    for t in range(compiled.fixed.T):
        result = outputs(step, {"input": inputs[t], **state})
        state = {"state." + k[5:]: v for k, v in result.items() if k.startswith("next.")}
        for layer, spikes in ref.spikes.items():
            assert np.array_equal(result[layer], spikes[t]), (layer, t)
        assert np.array_equal(result["readout_step"], ref.readout_steps[t])
        total = total + result["readout_step"]
    assert np.array_equal(total if compiled.fixed.readout == "mean" else result["readout_step"], ref.readout)


def test_every_arithmetic_path_with_overflow(case):
    """Current memory, voltage decay, strict fire rule, hard and soft reset, narrow registers that
    wrap and saturate (both modes on both registers): still exact, and overflow really happens."""
    compiled, inputs, _ = case("mnist_srif")
    for current_mode, voltage_mode, rule in (("wrap", "saturate", ">"), ("saturate", "wrap", ">=")):
        net = compiled.fixed.copy()
        net.arithmetic = dict(net.arithmetic, state_bits=16, current_overflow=current_mode,
                              voltage_overflow=voltage_mode, fire_rule=rule)
        for index, node in enumerate(n for n in net.nodes if n.neuron is not None):
            node.neuron.u_decay, node.neuron.v_decay = 700 + 300 * index, 250 * index
            if node.spiking:
                node.neuron.threshold = np.minimum(node.neuron.threshold, 2 ** 14)
                node.neuron.reset_amount = np.minimum(node.neuron.reset_amount, 2 ** 14)
                if index == 1:
                    node.neuron.reset = "hard"
        ref = execute.run(net, inputs)
        assert sum(c["current"] + c["voltage"] for c in ref.overflow.values()) > 0
        assert_same(onnx_backend.run(net, inputs), ref)
        assert_same(onnx_backend.run_steps(onnx_graph.fixed_model(net, stepwise=True), inputs), ref)
        result = outputs(onnx_graph.fixed_model(net), {"input": inputs})
        assert np.array_equal(result["readout"], ref.readout)


def test_loihi1_target_fire_rule(case):
    compiled, inputs, ref = case("mnist_lif", "loihi1")
    assert compiled.fixed.arithmetic["fire_rule"] == ">"
    assert_same(onnx_backend.run(compiled.fixed, inputs), ref)


def test_weight_planes_keep_partial_sums_exact(case):
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, (8, 3, 3, 3))
    planes = onnx_graph.weight_planes(weight, 255, limit=2 ** 13)
    assert len(planes) > 1
    assert np.array_equal(sum(plane * factor for plane, factor in planes), weight)
    assert all((np.abs(p).reshape(8, -1).sum(1) * 255).max() < 2 ** 13 for p, _ in planes)
    compiled, inputs, ref = case("mnist_lif")
    model = onnx_graph.fixed_model(compiled.fixed, limit=2 ** 16)
    assert any(".plane" in init.name for init in model.graph.initializer)
    trace = onnx_backend.run_session(onnx_backend.session(model), inputs)
    assert_same(trace, ref)


def test_write_artifacts_deterministic_and_runnable(case, tmp_path):
    compiled, inputs, ref = case("mnist_srif")
    first, second, plain = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for directory in (first, second, plain):
        directory.mkdir()
    options = {"onnx_spikes": True, "float_onnx": True}
    written = onnx_backend.write_artifacts(compiled, first, options)
    assert written == ["model.onnx", "model_step.onnx", "model_float.onnx"]
    assert onnx_backend.write_artifacts(compiled, second, dict(options)) == written
    for name in written:
        data = (first / name).read_bytes()
        assert data == (second / name).read_bytes(), name
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
        assert b"/tmp" not in data and str(tmp_path).encode() not in data
    assert_same(onnx_backend.run_file(first / "model.onnx", inputs), ref)
    assert onnx_backend.write_artifacts(compiled, plain, {}) == ["model.onnx", "model_step.onnx",
                                                                "model_spikes.onnx"]
    assert_same(onnx_backend.run_file(plain / "model_spikes.onnx", inputs), ref)
    lean = onnx.load(plain / "model.onnx")
    assert [o.name for o in lean.graph.output] == ["readout", "readout_steps"]
    assert lean.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = lean.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == compiled.fixed.T and dims[1].dim_param == "batch"
    trace = onnx_backend.run_file(plain / "model.onnx", inputs)
    assert trace.spikes == {}
    assert_same(trace, ref, spikes=False)
    chunked = onnx_backend.run_session(onnx_backend.session(first / "model.onnx"), inputs, chunk=2)
    assert_same(chunked, ref)


def test_input_errors(case):
    compiled, inputs, _ = case("mnist_lif")
    with pytest.raises(InputError):
        onnx_backend.run(compiled.fixed, inputs.astype(np.float64))
    with pytest.raises(InputError):
        onnx_backend.run(compiled.fixed, inputs[:, :, :, :5])
    with pytest.raises(InputError):
        onnx_backend.run(compiled.folded, inputs)
    with pytest.raises(InputError):
        onnx_backend.run_file(Path("/nonexistent-export/model.onnx"), inputs)


def _float_agreement(compiled: Compiled, images: np.ndarray):
    model = onnx_graph.float_model(compiled.folded, spikes=True)
    onnx.checker.check_model(model, full_check=True)
    encoded = execute.encode(compiled.fixed, images)
    result = onnx_backend.session(model).run(None, {"input": encoded})
    names = [o.name for o in model.graph.output]
    result = dict(zip(names, result))
    ref = execute.run(compiled.folded, execute.encode(compiled.folded, images))
    agree = float((result["readout"].argmax(1) == ref.predictions).mean())
    spikes = min(float((result[k] == v).mean()) for k, v in ref.spikes.items())
    return agree, spikes, result, ref


@pytest.mark.parametrize("name", ["mnist_srif", "mnist_lif"])
def test_float_model_close_to_float64(name):
    spec = recipe(name)
    compiled = compile_network(random_network(spec, seed=3), load_target("loihi2"))
    agree, spikes, result, ref = _float_agreement(compiled, random_images(spec, 64, seed=4))
    assert agree >= 0.9 and spikes >= 0.99
    assert np.allclose(result["readout_steps"], ref.readout_steps, rtol=0.05, atol=0.05)


@pytest.mark.slow   # all 1000 test digits
@pytest.mark.parametrize("checkpoint", ["mnist_srif.pt", "mnist_lif.pt"])
def test_trained_checkpoint_all_test_digits(checkpoint):
    path = MODELS / checkpoint
    if not path.is_file():
        pytest.skip(f"{path.name} is not trained yet")
    from snnc.data import load_dataset

    compiled = compile_checkpoint(path, "loihi2")
    images = load_dataset(compiled.data).test_images
    inputs = execute.encode(compiled.fixed, images)
    ref = execute.run(compiled.fixed, inputs)
    assert_same(onnx_backend.run(compiled.fixed, inputs), ref)
    agree, _, _, _ = _float_agreement(compiled, images)
    assert agree >= 0.98
