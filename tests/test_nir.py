"""NIR import/export (docs/interop.md): snnTorch networks run spike for spike in snnc, and snnc
networks survive snnc -> NIR -> snnc exactly."""
import warnings

import netfactory
import producer_nets
import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from snntorch.export_nir import export_to_nir

from snnc import execute, ir
from snnc.data import InputSpec, load_dataset, open_inputs
from snnc.errors import InputError
from snnc.exporters.nir_export import export_nir
from snnc.frontends.nir_frontend import load_nir
from snnc.passes import fold_all

DIGITS = 50


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist5k").test_images[:DIGITS]


def _leaky(shape, beta, threshold, output=False):
    """snnTorch's Leaky in the configuration NIR describes (and snnTorch's own NIR import builds):
    reset to zero, reset applied in the same step (reset_delay=False)."""
    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.as_tensor(threshold, dtype=torch.float32),
                     reset_mechanism="zero", reset_delay=False, init_hidden=True, output=output)


def _export(model, sample, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_to_nir(model, sample, ignore_dims=[0])
    nir.write(str(path), graph)
    return path


def test_snntorch_dense_network_matches_spike_for_spike(tmp_path, digits):
    torch.manual_seed(0)
    hidden, T = 64, 8
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), _leaky((hidden,), 0.875, torch.rand(hidden) * 0.5 + 0.5),
                                torch.nn.Linear(hidden, 10), _leaky((10,), 0.75, torch.ones(10), output=True))
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[2].weight.mul_(4.0)
    path = _export(model, torch.zeros(1, 784), tmp_path / "dense.nir")
    net = load_nir(path, T=T)
    assert net.metadata["nir"]["dt"] == pytest.approx(1e-4)   # snnTorch's step, inferred as tau/r
    assert [n.name for n in net.spiking_nodes()] == ["0", "2"]
    assert net.input_node.shape == (784,)                      # the NIR Input's own shape
    inputs = open_inputs("mnist5k", InputSpec.of(net), DIGITS)  # 1x28x28 digits by the layout rule
    trace = execute.run(net, inputs.network_input(net, inputs.units()))   # input current = pixel / 255
    x = torch.from_numpy(digits.reshape(DIGITS, 784).astype(np.float64) * net.encoding["scale"])
    reference = producer_nets.snntorch_simulate(model.double(), x, T)
    for index, name in ((1, "0"), (3, "2")):
        assert 0.02 < reference[str(index)].mean() < 0.6              # the comparison is not vacuous
        np.testing.assert_array_equal(trace.spikes[name], reference[str(index)])
    np.testing.assert_array_equal(trace.readout, reference['3'].sum(axis=0))  # spike counts


def test_snntorch_conv_and_synaptic_network_matches(tmp_path, digits):
    torch.manual_seed(1)
    T = 6
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5, stride=2, padding=1), _leaky((4, 13, 13), 0.5, torch.full((4, 13, 13), 0.5)),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10),
        snn.Synaptic(alpha=torch.full((10,), 0.5), beta=torch.full((10,), 0.75), threshold=torch.ones(10),
                     reset_mechanism="zero", reset_delay=False, init_hidden=True, output=True))
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[4].weight.mul_(4.0)
    path = _export(model, torch.zeros(1, 1, 28, 28), tmp_path / "conv.nir")
    net = load_nir(path, T=T)
    assert [n.op for n in net.nodes] == ["input", "conv2d", "avgpool", "flatten", "linear", "linear"]
    assert net.nodes[4].neuron.u_decay == 0.5       # CubaLIF: u_decay = dt / tau_syn = 1 - alpha
    trace = execute.run(net, execute.encode(net, digits))
    x = torch.from_numpy(digits.astype(np.float64) * net.encoding["scale"])
    reference = producer_nets.snntorch_simulate(model.double(), x, T)
    for index, name in ((1, "0"), (5, "4")):
        assert 0.02 < reference[str(index)].mean() < 0.6
        np.testing.assert_array_equal(trace.spikes[name], reference[str(index)])


def _assert_same_network(a: ir.Network, b: ir.Network) -> None:
    doc_a, arrays_a = ir._to_parts(a)
    doc_b, arrays_b = ir._to_parts(b)
    assert doc_a == doc_b
    assert sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        assert arrays_a[key].dtype == arrays_b[key].dtype and arrays_a[key].shape == arrays_b[key].shape, key
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)


def test_round_trip_through_nir_file_is_exact(tmp_path):
    net = fold_all(netfactory.random_network(netfactory.recipe("mnist_srif"), seed=3))
    path = tmp_path / "srif.nir"
    graph = export_nir(net, path)
    conv1 = graph.nodes["conv1.if"]
    # what NIR cannot say about an SRIF+IMP neuron is named in its metadata
    assert "soft reset" in conv1.metadata["snnc_not_in_nir"]
    assert "initial state" in conv1.metadata["snnc_not_in_nir"]
    np.testing.assert_array_equal(np.nextafter(conv1.v_threshold, np.inf), net.node("conv1").neuron.threshold)
    back = load_nir(path)
    _assert_same_network(net, back)
    images = netfactory.random_images(netfactory.recipe("mnist_srif"), 4)
    a = execute.run(net, execute.encode(net, images))
    b = execute.run(back, execute.encode(back, images))
    np.testing.assert_array_equal(a.readout, b.readout)


@pytest.mark.slow   # two full-width residual networks
def test_round_trip_of_residual_networks():
    for name in ("sew_resnet18", "resnet20"):
        net = fold_all(netfactory.random_network(netfactory.recipe(name), seed=1))
        _assert_same_network(net, load_nir(export_nir(net)))


def test_native_nir_parameters_alone_reproduce_a_hard_reset_lif_network():
    """Without snnc's metadata (what another tool sees), a LIF network keeps its dynamics."""
    net = fold_all(netfactory.random_network(netfactory.recipe("mnist_lif"), seed=2))
    dt = 1e-3
    graph = export_nir(net, dt=dt)
    lif = graph.nodes["fc1.lif"]
    n = net.node("fc1").neuron
    np.testing.assert_allclose(lif.tau, dt / n.v_decay)
    np.testing.assert_allclose(lif.r, 1.0 / n.v_decay)            # r dt / tau = input gain 1
    np.testing.assert_allclose(lif.v_leak, n.bias / n.v_decay)     # (dt/tau) v_leak = bias
    assert np.all(lif.v_threshold < n.threshold) and "snnc_not_in_nir" not in lif.metadata
    back = load_nir(graph, T=net.T, readout=net.readout, use_metadata=False)
    assert back.metadata["nir"]["dt"] == dt
    images = netfactory.random_images(netfactory.recipe("mnist_lif"), 16, seed=5)
    a = execute.run(net, execute.encode(net, images))
    b = execute.run(back, execute.encode(back, images))
    for name, spikes in a.spikes.items():
        assert spikes.any()
        np.testing.assert_array_equal(spikes, b.spikes[name])
    np.testing.assert_allclose(a.readout, b.readout, rtol=1e-12, atol=1e-12)


def _euler_lif(currents, tau, r, v_leak, v_threshold, v_reset, dt):
    """NIR's LIF ODE, Forward Euler, in its own coordinates: an independent reference."""
    v = np.zeros(currents.shape[1:])
    spikes = []
    for current in currents:
        v = v + dt / tau * (v_leak - v + r * current)
        fired = v > v_threshold
        v = np.where(fired, v_reset, v)
        spikes.append(fired)
    return np.stack(spikes)


def test_leak_and_reset_potential_follow_forward_euler():
    rng = np.random.default_rng(0)
    n_in, n_hidden, T, dt = 6, 5, 12, 0.5
    w1, w2 = rng.normal(size=(n_hidden, n_in)), rng.normal(size=(3, n_hidden))
    tau, r = np.full(n_hidden, 2.0), np.full(n_hidden, 1.5)
    v_leak, v_reset, v_threshold = np.full(n_hidden, 0.3), np.full(n_hidden, -0.25), np.linspace(0.4, 0.8, n_hidden)
    graph = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([n_in])),
        "fc": nir.Affine(weight=w1, bias=np.full(n_hidden, 0.1)),
        "lif": nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=v_threshold, v_reset=v_reset),
        "out_fc": nir.Linear(weight=w2),
        "li": nir.LI(tau=np.full(3, 4.0), r=np.ones(3), v_leak=np.zeros(3)),
        "out": nir.Output(output_type=np.array([3]))},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out_fc"), ("out_fc", "li"), ("li", "out")])
    net = load_nir(graph, T=T, dt=dt, encoding={"kind": "direct", "scale": 1.0, "max": 1})
    x = rng.uniform(0, 1, size=(T, 7, n_in))
    trace = execute.run(net, x, record_voltages=("out_fc",))
    expected = _euler_lif(x @ w1.T + 0.1, tau, r, v_leak, v_threshold, v_reset, dt)
    assert 0.05 < expected.mean() < 0.9
    np.testing.assert_array_equal(trace.spikes["fc"], expected)
    # LI readout: v += dt/tau (-v + r I)
    v, states = np.zeros((7, 3)), []
    for s in expected:
        v = v + dt / 4.0 * (-v + s @ w2.T)
        states.append(v)
    np.testing.assert_allclose(trace.readout_steps, np.stack(states), rtol=1e-12, atol=1e-12)
    assert net.readout == "mean"


def test_if_threshold_and_output_without_neurons():
    rng = np.random.default_rng(1)
    w1, w2, w3 = rng.normal(size=(4, 5)), rng.normal(size=(4, 4)), rng.normal(size=(2, 4))
    graph = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([5])),
        "a": nir.Linear(weight=w1), "if": nir.IF(r=np.full(4, 2.0), v_threshold=np.full(4, 1.0)),
        "b": nir.Linear(weight=w2), "thr": nir.Threshold(threshold=np.full(4, 0.5)),
        "c": nir.Linear(weight=w3), "out": nir.Output(output_type=np.array([2]))},
        edges=[("in", "a"), ("a", "if"), ("if", "b"), ("b", "thr"), ("thr", "c"), ("c", "out")])
    net = load_nir(graph, T=6, encoding={"kind": "direct", "scale": 1.0, "max": 1})
    assert net.metadata["nir"]["dt"] == 1.0 and net.readout == "last"
    x = rng.uniform(0, 1, size=(6, 3, 5))
    trace = execute.run(net, x)
    v, s_if, s_thr = np.zeros((3, 4)), [], []
    for step in x:
        v = v + 2.0 * (step @ w1.T)            # IF: v += r dt I
        fired = v > 1.0
        v[fired] = 0.0
        s_if.append(fired)
        s_thr.append((fired @ w2.T) > 0.5)      # Threshold: no state
    np.testing.assert_array_equal(trace.spikes["a"], np.stack(s_if))
    np.testing.assert_array_equal(trace.spikes["b"], np.stack(s_thr))
    # no output neurons: the readout integrates the output currents, read at the last step
    np.testing.assert_allclose(trace.readout, (np.stack(s_thr) @ w3.T).sum(axis=0), rtol=1e-12)


def _small_graph(**changes):
    nodes = {"in": nir.Input(input_type=np.array([3])), "fc": nir.Linear(weight=np.ones((2, 3))),
             "lif": nir.LIF(tau=np.full(2, 2e-3), r=np.full(2, 2.0), v_leak=np.zeros(2), v_threshold=np.ones(2)),
             "fc2": nir.Linear(weight=np.ones((2, 2))), "out": nir.Output(output_type=np.array([2]))}
    edges = [("in", "fc"), ("fc", "lif"), ("lif", "fc2"), ("fc2", "out")]
    nodes.update(changes.pop("nodes", {}))
    edges += changes.pop("edges", [])
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


@pytest.mark.parametrize("graph, message", [
    (_small_graph(nodes={"lif": nir.LIF(tau=np.array([2e-3, 3e-3]), r=np.array([2.0, 3.0]), v_leak=np.zeros(2),
                                        v_threshold=np.ones(2))}), "per-neuron membrane time constant"),
    (_small_graph(nodes={"lif": nir.LIF(tau=np.full(2, 2e-3), r=np.full(2, 4.0), v_leak=np.zeros(2),
                                        v_threshold=np.ones(2)),
                         "fc2": nir.Linear(weight=np.ones((2, 2)))},
                  edges=[("fc2", "lif")]), "recurrent"),
    (_small_graph(nodes={"fc2": nir.Delay(delay=np.ones(2))}), r"'fc2' \(Delay\) feeds Output"),
    (_small_graph(nodes={"fc2": nir.Scale(scale=np.array([2.0, 3.0]))}), r"'fc2' \(Scale\)"),
    (_small_graph(nodes={"lif": nir.LIF(tau=np.full(2, 2e-3), r=np.full(2, 1.0), v_leak=np.zeros(2),
                                        v_threshold=np.ones(2))}), "pass --nir-semantics .* or dt"),
])
def test_unsupported_graphs_are_named(graph, message):
    with pytest.raises(InputError, match=message):
        load_nir(graph, T=4)


def test_time_constant_shorter_than_the_step_is_refused():
    with pytest.raises(InputError, match="'lif' .*shorter than one step"):
        load_nir(_small_graph(), T=4, dt=1.0)


def test_conv_groups_and_missing_file_are_refused(tmp_path):
    graph = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([2, 5, 5])),
        "conv": nir.Conv2d(input_shape=(5, 5), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1, dilation=1,
                           groups=2, bias=np.zeros(2)),
        "if": nir.IF(r=np.ones((2, 5, 5)), v_threshold=np.ones((2, 5, 5))),
        "out": nir.Output(output_type=np.array([2, 5, 5]))},
        edges=[("in", "conv"), ("conv", "if"), ("if", "out")], type_check=False)
    with pytest.raises(InputError, match="'conv' .*groups=2"):
        load_nir(graph, T=2)
    with pytest.raises(InputError, match="no such NIR file"):
        load_nir(tmp_path / "missing.nir", T=2)
    (tmp_path / "bad.nir").write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable NIR graph"):
        load_nir(tmp_path / "bad.nir", T=2)


def test_export_refuses_unfolded_and_fixed_networks():
    net = netfactory.random_network(netfactory.recipe("mnist_lif"))
    with pytest.raises(InputError, match="fold the network first"):
        export_nir(net)
    from snnc.compiler import compile_network
    from snnc.targets import load_target
    fixed = compile_network(net, load_target("loihi2")).fixed
    with pytest.raises(InputError, match="fixed-point"):
        export_nir(fixed)


def test_graph_structure_rules():
    """Neurons on the input get an identity synapse, a Scale folds into its synapse, two spike tensors
    into one synapse are added first (NIR sums incoming edges), output spikes are counted."""
    rng = np.random.default_rng(2)
    wa, wc = rng.normal(size=(4, 4)), rng.normal(size=(3, 4))
    scale = np.array([0.5, 2.0, 1.0, 3.0])

    def lif():
        return nir.LIF(tau=np.full(4, 2.0), r=np.full(4, 2.0), v_leak=np.zeros(4), v_threshold=np.full(4, 0.6))

    graph = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([4])), "direct": lif(),
        "a": nir.Linear(weight=wa), "s": nir.Scale(scale=scale), "lif_a": lif(),
        "c": nir.Linear(weight=wc), "lif_c": nir.LIF(tau=np.full(3, 2.0), r=np.full(3, 2.0), v_leak=np.zeros(3),
                                                     v_threshold=np.full(3, 0.3)),
        "out": nir.Output(output_type=np.array([3]))},
        edges=[("in", "direct"), ("in", "a"), ("a", "s"), ("s", "lif_a"), ("direct", "c"), ("lif_a", "c"),
               ("c", "lif_c"), ("lif_c", "out")])
    net = load_nir(graph, T=8, encoding={"kind": "direct", "scale": 1.0, "max": 1})
    ops = {n.name: n.op for n in net.nodes}
    assert ops["direct"] == "linear" and ops["a"] == "linear" and ops["c_sum"] == "add"
    assert net.output_node.name == "readout" and net.metadata["nir"]["dt"] == 1.0   # tau/r = 1
    x = rng.uniform(0, 1, size=(8, 5, 4))
    trace = execute.run(net, x)

    def run_lif(currents, threshold):
        v, out = np.zeros(currents.shape[1:]), []
        for current in currents:
            v = v + 0.5 * (-v + 2.0 * current)
            fired = v > threshold
            v = np.where(fired, 0.0, v)
            out.append(fired)
        return np.stack(out).astype(np.float64)

    direct = run_lif(x, 0.6)
    lif_a = run_lif((x @ wa.T) * scale, 0.6)
    lif_c = run_lif((direct + lif_a) @ wc.T, 0.3)
    assert lif_c.any()
    np.testing.assert_array_equal(trace.spikes["direct"], direct)
    np.testing.assert_array_equal(trace.spikes["a"], lif_a)
    np.testing.assert_array_equal(trace.spikes["c"], lif_c)
    np.testing.assert_array_equal(trace.readout, lif_c.sum(axis=0))


def test_artifact_writer_is_deterministic(tmp_path):
    from snnc.compiler import compile_network
    from snnc.exporters.nir_export import write_artifact
    from snnc.targets import load_target

    compiled = compile_network(netfactory.random_network(netfactory.recipe("mnist_lif")), load_target("loihi2"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert write_artifact(compiled, tmp_path / "a", {}) == ["network.nir"]
    write_artifact(compiled, tmp_path / "b", {})
    assert (tmp_path / "a/network.nir").read_bytes() == (tmp_path / "b/network.nir").read_bytes()
    _assert_same_network(compiled.folded, load_nir(tmp_path / "a/network.nir"))
