"""The Lava backend: real Lava processes in Lava's simulator equal the integer reference spike for
spike (every layer, every step, the integer readout, overflow counts), on both MNIST recipes, on a
ResNet (residual currents) and a SEW ResNet (added spikes) with delayed shortcuts, streamed back
to back or drained; a network built from Lava's own LIF and Dense equals the reference too; the
export artifact is deterministic and loads into runnable process objects."""
import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netfactory import random_images, random_network, recipe
from snnc import compiler, execute, fixedpoint, passes
from snnc.backends import get_backend, lava_backend, reference
from snnc.data import load_dataset
from snnc.errors import DesignRuleError, InputError
from snnc.export_dir import ExportDir
from snnc.targets import load_target

MODELS = Path(__file__).resolve().parent.parent / "models"
LOIHI2 = load_target("loihi2")
IMP_LIF = {"type": "lif", "vth": 0.5, "tau": 2.0, "decay_input": False, "reset": "hard", "mpr": False,
           "imp": True}
SMALL = {
    "resnet19": {"arch_params": {"channels": [4, 8, 8], "blocks": [2, 1, 1], "hidden": 16},
                 "input_shape": [3, 8, 8]},
    "sew_resnet18": {"arch_params": {"channels": [4, 4, 8, 8], "blocks": [2, 1, 1, 1]},
                     "input_shape": [3, 16, 16]},
    # pooled convs become flat Sparse-fed populations that the next Conv reads through a reshape
    "vgg16": {"arch_params": {"channels": [4, 4, 8, 8, 8], "convs": [2, 2, 2, 1, 1], "hidden": 16},
              "input_shape": [3, 32, 32]},
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist5k").test_images


def assert_same(ref, got, voltages=()):
    assert set(got.spikes) == set(ref.spikes)
    for name, spikes in ref.spikes.items():
        assert got.spikes[name].shape == spikes.shape and got.spikes[name].dtype == np.uint8
        mismatch = np.argwhere(got.spikes[name] != spikes)
        assert mismatch.size == 0, f"layer {name}: {len(mismatch)} spikes differ, first at {mismatch[0]}"
    np.testing.assert_array_equal(got.readout_steps, ref.readout_steps)
    np.testing.assert_array_equal(got.readout, ref.readout)
    assert got.overflow == ref.overflow
    for name in voltages:
        np.testing.assert_array_equal(got.voltages[name], ref.voltages[name])


def assert_active(trace):
    """The comparison means something only when every layer fires, but not everywhere."""
    for name, spikes in trace.spikes.items():
        assert 0.001 < spikes.mean() < 0.9, f"layer {name} fires at rate {spikes.mean()}"


def has_bias_and_imp(net):
    spiking = net.spiking_nodes()
    return (all(np.any(n.neuron.bias != 0) for n in spiking)
            and all(np.any(n.neuron.initial_state != 0) for n in spiking))


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", [("mnist_srif", {}), ("mnist_lif", {"neuron": IMP_LIF})])
def test_random_mnist_network_is_spike_exact(name, overrides, digits):
    net = compiler.compile_network(random_network(recipe(name, **overrides), seed=3), LOIHI2).fixed
    assert has_bias_and_imp(net)
    inputs = execute.encode(net, digits[:24])
    layers = tuple(node.name for node in net.nodes if node.neuron is not None)
    ref = reference.run(net, inputs, record_voltages=layers)
    assert_active(ref)
    got = get_backend("lava").run(net, inputs, record_voltages=layers)
    assert_same(ref, got, voltages=layers)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet19", "sew_resnet18", "vgg16"])
def test_conv_network_is_spike_exact(name):
    spec = recipe(name, **SMALL[name])
    net = compiler.compile_network(random_network(spec, seed=1), LOIHI2).fixed
    spec_graph, _ = lava_backend.lava_spec(net)
    relays = [p for p in spec_graph["processes"] if p["type"] == "relay"]
    if name != "vgg16":
        assert any(p["delay"] > 0 for p in relays), "the shortcut branches must be delayed"
    else:
        assert any(link["reshape"] and len(link["reshape"]) == 3 for link in spec_graph["connections"])
    if name == "sew_resnet18":
        assert any(p["delay"] == 0 and p["node"].endswith("_add") for p in relays)
        assert has_bias_and_imp(net)
    inputs = execute.encode(net, random_images(spec, 6, seed=2))
    ref = reference.run(net, inputs)
    assert_active(ref)
    assert_same(ref, lava_backend.run(net, inputs))


@pytest.mark.slow
def test_drained_schedule_equals_streamed_and_latency_is_depth(digits):
    net = compiler.compile_network(random_network(recipe("mnist_srif"), seed=5), LOIHI2).fixed
    inputs = execute.encode(net, digits[:5])
    graph_spec, _ = lava_backend.lava_spec(net)
    depths = {p["name"]: p["depth"] for p in graph_spec["processes"] if p["type"] == "neuron"}
    assert depths == {"conv1": 1, "conv2": 2, "fc1": 3, "readout": 4} and graph_spec["latency"] == 4
    streamed = lava_backend.build_lava_graph(net, inputs=inputs)
    drained = lava_backend.build_lava_graph(net, inputs=inputs, period=net.T + graph_spec["latency"])
    try:
        assert streamed.num_steps == 5 * net.T + 4 and drained.num_steps == 4 * 8 + net.T + 4
        first, second = streamed.run().read(), drained.run().read()
    finally:
        streamed.close()
        drained.close()
    assert_same(first, second)
    assert_same(reference.run(net, inputs), first)


def uniform_threshold_lif(neuron: dict, seed: int = 0):
    """A hard-reset network quantized for Loihi 1 whose layers each have ONE threshold (Lava's LIF
    takes a scalar vth): batch norms folded into the weights, and every output row a permutation
    of the same weights, so the quantizer picks the same scale for every channel. Gains make the
    untrained layers fire."""
    spec = recipe("mnist_lif", arch_params={"channels": [4, 8], "hidden": 32}, neuron=neuron)
    folded = passes.fold_all(random_network(spec, seed), bn_into="weights")
    rng = np.random.default_rng(seed)
    for gain, node in zip((20.0, 1.0, 2.0), folded.spiking_nodes()):
        rows = node.weight.reshape(node.weight.shape[0], -1)
        base = rows[int(np.argmax(np.abs(rows).max(1)))] * gain
        rows[:] = np.stack([rng.permutation(base) for _ in range(rows.shape[0])])
    return passes.quantize(folded, load_target("loihi1"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lif", "if"])
def test_lava_lif_and_dense_equal_the_reference(kind, digits):
    neuron = dict(IMP_LIF, type=kind) if kind == "lif" else {"type": "if", "vth": 0.5, "reset": "hard",
                                                              "mpr": False, "imp": True}
    net = uniform_threshold_lif(neuron)
    assert net.arithmetic["fire_rule"] == ">" and has_bias_and_imp(net)
    biases_need_exponent = False
    for node in net.spiking_nodes():
        n = node.neuron
        assert n.reset == "hard" and int(n.u_decay) == 4095 and int(n.v_decay) == (2048 if kind == "lif" else 0)
        assert np.unique(n.threshold).size == 1 and n.threshold.flat[0] % 64 == 0
        assert 0 < n.threshold.flat[0] >> 6 < 2 ** 17
        mant, exp = lava_backend.bias_mant_exp(n.bias)
        assert np.array_equal(mant << exp, n.bias) and np.all(np.abs(mant) < 4096)
        biases_need_exponent |= bool(np.any(exp > 0))
    assert biases_need_exponent
    inputs = execute.encode(net, digits[:4])
    ref = reference.run(net, inputs)
    assert_active(ref)
    spikes = lava_backend.run_lava_lif(net, inputs)
    for name, expected in ref.spikes.items():
        np.testing.assert_array_equal(spikes[name], expected, err_msg=name)


def test_lava_lif_refuses_what_it_cannot_run():
    net = compiler.compile_network(random_network(recipe("mnist_srif")), LOIHI2).fixed
    with pytest.raises(DesignRuleError, match="fire_rule"):
        lava_backend.run_lava_lif(net, np.zeros((4, 1, 1, 28, 28), dtype=np.int64))
    with pytest.raises(DesignRuleError, match="mantissa"):
        lava_backend.bias_mant_exp(np.array([4095 * 2 ** 7 + 1]))


@pytest.mark.slow
def test_dense_weight_mapping_is_exact_where_lavas_default_is_not(tmp_path):
    """Odd mixed-sign weights: Lava's Dense with default settings drops their LSB; snnc's mapping
    (2*w, weight_exp=-1, sign mode MIXED) reproduces W @ s exactly, with graded inputs too."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.utils.weightutils import SignMode

    from snnc.lava_procs.process import MemmapSink

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (6, 5))
    weights[0, :2] = (3, -3)
    pixels = rng.integers(0, 256, (5, 4))
    source = RingBuffer(data=pixels.astype(np.int32))
    paths = []
    for name, dense in (("snnc", Dense(weights=(weights << 1).astype(np.int32), weight_exp=-1, num_weight_bits=8,
                                       sign_mode=SignMode.MIXED, num_message_bits=8)),
                        ("default", Dense(weights=weights.astype(np.int32), num_message_bits=8))):
        paths.append(lava_backend._new_memmap(tmp_path / f"{name}.npy", np.int32, (5, 6)))
        sink = MemmapSink(shape=(6,), path=paths[-1], steps=5)
        source.s_out.connect(dense.s_in)
        dense.a_out.connect(sink.a_in)
    try:
        source.run(condition=RunSteps(num_steps=5), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        source.stop()
    exact = (weights @ pixels).T
    mapped, default = (np.load(path) for path in paths)
    assert np.array_equal(mapped[1:], exact)  # one step of synaptic delay
    assert not np.array_equal(default[1:], exact)
    assert np.array_equal(default[1:], (((weights >> 1) << 1) @ pixels).T)


@pytest.mark.slow
def test_export_artifact_is_deterministic_and_runs(srif_export, digits, tmp_path):
    manifest = json.loads((srif_export / "manifest.json").read_text())
    assert {"lava/graph.json", "lava/network.npz"} <= set(manifest["files"])
    net = ExportDir.open(srif_export).network
    again = lava_backend.write_artifacts(compiler.Compiled("", net, net, net, LOIHI2, [], "mnist5k"),
                                         tmp_path, {})
    for name in again:
        assert (tmp_path / name).read_bytes() == (srif_export / name).read_bytes()
    graph_doc = json.loads((srif_export / "lava/graph.json").read_text())
    assert str(srif_export) not in json.dumps(graph_doc)
    assert {p["type"] for p in graph_doc["processes"]} == {"source", "conv", "sparse", "dense", "neuron"}

    export = ExportDir.open(srif_export)
    graph = lava_backend.build_lava_graph(lava_backend.load_artifact(export), images=digits[:3],
                                          record_dir=tmp_path / "run")
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.sparse.process import Sparse

    from snnc.lava_procs.process import SnncNeuron

    assert isinstance(graph.source, RingBuffer) and isinstance(graph.sink, SnncNeuron)
    assert set(graph.neurons) == {"conv1", "conv2", "fc1", "readout"}
    assert {type(p) for p in graph.synapses.values()} == {Conv, Sparse, Dense}
    assert graph.num_steps == 3 * net.T + 4
    trace = graph.run().read()
    inputs = execute.encode(net, digits[:10])
    assert_same(reference.run(net, inputs[:, :3]), trace)
    assert_same(reference.run(net, inputs), lava_backend.run_export(export, inputs))


def test_bad_inputs_are_one_line_errors(digits):
    float_net = random_network(recipe("mnist_srif"))
    with pytest.raises(InputError, match="quantize"):
        lava_backend.run(float_net, execute.encode(compiler.compile_network(float_net, LOIHI2).fixed, digits[:1]))
    net = compiler.compile_network(float_net, LOIHI2).fixed
    with pytest.raises(InputError, match="shape"):
        lava_backend.run(net, np.zeros((4, 1, 1, 8, 8), dtype=np.int64))
    with pytest.raises(InputError, match="period"):
        lava_backend.build_lava_graph(net, images=digits[:1], period=2)
    with pytest.raises(InputError, match="voltages"):
        lava_backend.build_lava_graph(net, images=digits[:1], record_voltages=("pool1",))


def test_overlapping_pool_that_sums_weights_past_8_bits_is_refused():
    from snnc import ir

    def neuron(shape, kind="spiking"):
        zeros = np.zeros(shape, dtype=np.int64)
        return ir.Neuron(kind=kind, threshold=zeros + 64 if kind == "spiking" else None,
                         reset="hard" if kind == "spiking" else "none", reset_amount=None, bias=zeros,
                         initial_state=zeros.copy(), v_decay=0, u_decay=4095)

    nodes = [ir.Node("input", "input", [], (1, 4, 4)),
             ir.Node("conv", "conv2d", ["input"], (2, 4, 4), {"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0]},
                     weight=np.full((2, 1, 1, 1), 3), neuron=neuron((2, 4, 4))),
             ir.Node("pool", "sumpool", ["conv"], (2, 3, 3), {"kernel": 2, "stride": 1}),
             ir.Node("flatten", "flatten", ["pool"], (18,)),
             ir.Node("readout", "linear", ["flatten"], (10,), weight=np.full((10, 18), 100),
                     neuron=neuron((10,), "integrator"))]
    net = ir.Network("overlap", 2, "mean", nodes, arithmetic=dict(LOIHI2.arithmetic, kind="fixed"),
                     encoding={"max": 255, "scale": 1 / 255})
    net.validate()
    with pytest.raises(DesignRuleError, match="composed weight 400"):
        lava_backend.lava_spec(net)


@pytest.mark.slow
def test_process_models_are_found_inside_the_small_subpackage(monkeypatch):
    """Lava executes every .py file of the package holding the process while looking for models:
    that must be snnc/lava_procs (numpy + lava only), never snnc/ itself."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer

    from snnc.lava_procs.process import SnncNeuron, SnncRelay

    executed = []
    original = importlib.util.spec_from_file_location

    def spy(name, location, *args, **kwargs):
        executed.append(Path(location))
        return original(name, location, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "spec_from_file_location", spy)
    source = RingBuffer(data=np.ones((3, 4), dtype=np.int32))
    relay, neuron = SnncRelay(shape=(3,), delay=1), SnncNeuron(shape=(3,), threshold=1, samples=1, steps=4)
    source.s_out.connect(relay.a_in)
    relay.s_out.connect(neuron.a_in)
    try:
        source.run(condition=RunSteps(num_steps=4), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        source.stop()
    ours = {path for path in executed if "snnc" in path.parts}
    assert ours and all(path.parent.name == "lava_procs" for path in ours)
    for path in ours:   # absolute imports of numpy, lava and the light snnc modules only
        assert _imports(path) <= {"numpy", "lava", "snnc.fixedpoint", "snnc.lava_procs.process"}, path
    assert _imports(Path(fixedpoint.__file__)) == {"numpy", "snnc.errors"}
    assert _imports(Path(fixedpoint.__file__).with_name("errors.py")) == set()


def _imports(path: Path) -> set[str]:
    """The modules a file imports (top-level packages, snnc modules in full); relative imports fail."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names = [f"{node.module}.{alias.name}" if node.module == "snnc" else node.module for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name if name.startswith("snnc.") else name.split(".")[0] for name in names}
    return found - {"__future__"}


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["mnist_srif.pt", "mnist_lif.pt"])
def test_trained_checkpoint_is_spike_exact_on_50_digits(checkpoint, digits):
    path = MODELS / checkpoint
    if not path.is_file():
        pytest.skip(f"{path} has not been trained yet")
    net = compiler.compile_checkpoint(path, "loihi2").fixed
    inputs = execute.encode(net, digits[:50])
    ref = reference.run(net, inputs)
    assert_same(ref, lava_backend.run(net, inputs))


@pytest.mark.slow
def test_lava_runs_after_the_compiled_kernels_started_their_threads():
    """numba fixes multiprocessing's start method when it starts the thread pool of snnc's kernels;
    Lava's runtime sets it again on first import and refused to start after that (RuntimeError:
    context has already been set). A fresh process: the reference first, then Lava."""
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import numpy as np
from netfactory import random_images, random_network, recipe
from snnc import compiler, execute
from snnc.backends import lava_backend, reference
from snnc.targets import load_target
spec = recipe("mnist_lif", arch_params={{"channels": [4, 4], "hidden": 8}})
net = compiler.compile_network(random_network(spec, seed=0), load_target("loihi2")).fixed
inputs = execute.encode(net, random_images(spec, 2, seed=0))
expected = reference.run(net, inputs)
assert np.array_equal(lava_backend.run(net, inputs).readout, expected.readout)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_unrolled_conv_matrix_holds_dilation_and_groups():
    """The matrix a Sparse or DelayDense holds for a conv2d (a conv after a pool view, or with
    delays that differ per input) is the convolution itself, dilated and grouped."""
    import torch

    from snnc.ir import Node

    rng = np.random.default_rng(9)
    weight = rng.integers(-5, 6, (6, 2, 3, 3))
    node = Node(name="conv", op="conv2d", inputs=["x"], shape=(6, 5, 7), weight=weight,
                attrs={"kernel": [3, 3], "stride": [1, 2], "padding": [1, 2], "dilation": [2, 1], "groups": 3})
    x = rng.integers(0, 2, (6, 7, 11))
    expected = execute.synaptic_op(node, [torch.from_numpy(x[None].astype(np.float64))], with_bias=False)
    got = lava_backend._conv_matrix(node, x.shape) @ x.reshape(-1)
    np.testing.assert_array_equal(got, expected.numpy().reshape(-1).astype(np.int64))
