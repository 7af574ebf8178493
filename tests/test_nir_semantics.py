"""NIR import under producer profiles (docs/interop.md, section 1): the profile's discrete rule per
neuron, the assumptions it warns about and records, what it refuses, and the graph structures the
field writes (pooled currents, nested subgraphs, batch dimensions, per-channel parameters).
Expected values come from plain numpy loops written here, never from snnc's executor."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnc import execute
from snnc.errors import InputError
from snnc.frontends.nir_frontend import load_nir

RNG = np.random.default_rng(7)


def _graph(nodes, edges, metadata=None):
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {}, type_check=False)


def _dense_if(threshold=1.0, v_reset=0.0, n_in=6, n=5, metadata=None):
    """Input -> Linear -> IF -> Linear -> Output, weights drawn once."""
    w1 = RNG.uniform(0.0, 0.6, (n, n_in))
    w2 = RNG.uniform(-1.0, 1.0, (3, n))
    nodes = {"in": nir.Input(input_type=np.array([n_in])), "fc": nir.Linear(weight=w1),
             "if": nir.IF(r=np.ones(n), v_threshold=np.full(n, threshold), v_reset=np.full(n, v_reset)),
             "out_fc": nir.Linear(weight=w2), "out": nir.Output(output_type=np.array([3]))}
    edges = [("in", "fc"), ("fc", "if"), ("if", "out_fc"), ("out_fc", "out")]
    return _graph(nodes, edges, metadata), w1


def _if_loop(x, w, threshold, fires_at_equal, reset):
    """The IF neuron of a producer, stepped in numpy: v += w x; spike on v > or >= threshold; reset."""
    v = np.zeros((x.shape[1], w.shape[0]))
    spikes = []
    for t in range(x.shape[0]):
        v = v + x[t] @ w.T
        fired = v >= threshold if fires_at_equal else v > threshold
        v = np.where(fired, 0.0, v) if reset == "zero" else v - threshold * fired
        spikes.append(fired.astype(np.uint8))
    return np.stack(spikes)


def _spikes(net, key, units):
    trace = execute.run(net, execute.encode(net, units))
    return trace.spikes[net.metadata["nir"]["populations"][key]]


@pytest.mark.parametrize("semantics, assume, fires_at_equal, reset", [
    ("nir", None, False, "zero"),
    ("sinabs", {"spikes": "single"}, True, "subtract"),
    ("sinabs", {"spikes": "single", "reset": "zero"}, True, "zero"),
    ("spikingjelly", None, True, "zero"),
    ("spikingjelly", {"reset": "subtract"}, True, "subtract"),
])
def test_if_neurons_follow_the_producers_rule(semantics, assume, fires_at_equal, reset):
    graph, w1 = _dense_if()
    units = RNG.integers(0, 256, (12, 6))
    dt = 1e-4 if semantics == "spikingjelly" else None
    if dt:   # SpikingJelly writes r = 1/dt
        graph.nodes["if"].r = np.full(5, 1.0 / dt)
    net = load_nir(graph, T=10, semantics=semantics, assume=assume)
    x = np.broadcast_to(units / 255.0, (10,) + units.shape)
    expected = _if_loop(x, w1, 1.0, fires_at_equal, reset)
    np.testing.assert_array_equal(_spikes(net, "if", units), expected)
    assert net.metadata["nir"]["semantics"]["profile"] == semantics


def test_threshold_ties_follow_the_fire_rule():
    """Weight 0.5, constant input 1: v reaches the threshold exactly at steps 1, 3, 5 (0-based):
    '>=' fires there, '>' one step later."""
    nodes = {"in": nir.Input(input_type=np.array([1])), "fc": nir.Linear(weight=np.array([[0.5]])),
             "if": nir.IF(r=np.ones(1), v_threshold=np.ones(1), v_reset=np.zeros(1)),
             "out_fc": nir.Linear(weight=np.ones((1, 1))), "out": nir.Output(output_type=np.array([1]))}
    graph = _graph(nodes, [("in", "fc"), ("fc", "if"), ("if", "out_fc"), ("out_fc", "out")])
    units = np.full((1, 1), 255)
    at_equal = load_nir(graph, T=6, semantics="sinabs", assume={"spikes": "single", "reset": "zero"})
    above = load_nir(graph, T=6, semantics="nir")
    assert np.flatnonzero(_spikes(at_equal, "if", units)[:, 0, 0]).tolist() == [1, 3, 5]
    assert np.flatnonzero(_spikes(above, "if", units)[:, 0, 0]).tolist() == [2, 5]


def test_snntorch_subtracts_the_threshold_one_step_late():
    """snnTorch's Leaky: mem_t = beta mem_{t-1} + x_t - threshold * (mem_{t-1} > threshold)."""
    beta, dt, n = 0.75, 1e-4, 4
    w = RNG.uniform(0.2, 0.9, (n, 3))
    tau = dt / (1 - beta)
    nodes = {"in": nir.Input(input_type=np.array([3])), "fc": nir.Linear(weight=w),
             "lif": nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / dt), v_leak=np.zeros(n),
                            v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "out_fc": nir.Linear(weight=np.ones((2, n))), "out": nir.Output(output_type=np.array([2]))}
    graph = _graph(nodes, [("in", "fc"), ("fc", "lif"), ("lif", "out_fc"), ("out_fc", "out")])
    units = RNG.integers(0, 256, (8, 3))
    x = units / 255.0
    mem, spikes = np.zeros((8, n)), []
    for _ in range(12):
        reset = mem > 1.0
        mem = beta * mem + x @ w.T - 1.0 * reset
        spikes.append((mem > 1.0).astype(np.uint8))
    net = load_nir(graph, T=12, semantics="snntorch")
    np.testing.assert_array_equal(_spikes(net, "lif", units), np.stack(spikes))
    warnings = net.metadata["nir"]["semantics"]["warnings"]
    assert len(warnings) == 1 and "--nir-assume reset=zero" in warnings[0]


def test_sinabs_lif_decays_exponentially():
    tau, n = 5.0, 4
    w = RNG.uniform(0.5, 2.0, (n, 3))
    nodes = {"in": nir.Input(input_type=np.array([3])), "fc": nir.Linear(weight=w),
             "lif": nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                            v_reset=np.zeros(n)),
             "out_fc": nir.Linear(weight=np.ones((2, n))), "out": nir.Output(output_type=np.array([2]))}
    graph = _graph(nodes, [("in", "fc"), ("fc", "lif"), ("lif", "out_fc"), ("out_fc", "out")])
    units = RNG.integers(0, 256, (8, 3))
    alpha = np.exp(-1.0 / tau)
    v, spikes = np.zeros((8, n)), []
    for _ in range(10):
        v = alpha * v + (1 - alpha) * (units / 255.0 @ w.T)
        fired = v >= 1.0
        v = v - fired
        spikes.append(fired.astype(np.uint8))
    net = load_nir(graph, T=10, semantics="sinabs", assume={"spikes": "single"})
    np.testing.assert_array_equal(_spikes(net, "lif", units), np.stack(spikes))


def test_sinabs_multispike_fires_counts():
    """Sinabs' default MultiSpike: floor(v / thr) spikes where v >= thr, the threshold subtracted
    once per spike; assumed (and said) when the graph does not record the spike function."""
    graph, w1 = _dense_if()
    graph.nodes["fc"].weight = w1 * 4
    units = RNG.integers(0, 256, (12, 6))
    net = load_nir(graph, T=10, semantics="sinabs")
    x = units / 255.0
    v, counts = np.zeros((12, 5)), []
    for _ in range(10):
        v = v + x @ (w1 * 4).T
        count = (v > 0) * np.trunc(v / 1.0)
        v = v - count * 1.0
        counts.append(count)
    got = _spikes(net, "if", units)
    assert got.max() > 1
    np.testing.assert_array_equal(got, np.stack(counts))
    warnings = net.metadata["nir"]["semantics"]["warnings"]
    assert any("several spikes per step (MultiSpike, its default" in line and "spikes=single" in line
               for line in warnings)


def test_norse_time_constants_and_unscaled_current():
    """Norse writes tau = dt / tau_inv and adds its input to the current unscaled (dt = 1e-3)."""
    dt, tau_mem_inv, tau_syn_inv, n = 1e-3, 100.0, 200.0, 4
    w = RNG.uniform(0.5, 3.0, (n, 3))
    nodes = {"in": nir.Input(input_type=np.array([1, 3])), "fc": nir.Linear(weight=w),
             "lif": nir.CubaLIF(tau_mem=np.full(n, dt / tau_mem_inv), tau_syn=np.full(n, dt / tau_syn_inv),
                                r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5),
                                v_reset=np.zeros(n), w_in=np.ones(n)),
             "out_fc": nir.Linear(weight=np.ones((2, n))), "out": nir.Output(output_type=np.array([2]))}
    graph = _graph(nodes, [("in", "fc"), ("fc", "lif"), ("lif", "out_fc"), ("out_fc", "out")])
    units = RNG.integers(0, 256, (8, 3))
    v, i, spikes = np.zeros((8, n)), np.zeros((8, n)), []
    for _ in range(12):
        i = i + units / 255.0 @ w.T
        v = v + dt * tau_mem_inv * ((0.0 - v) + i)
        i = i - dt * tau_syn_inv * i
        fired = v > 0.5
        v = np.where(fired, 0.0, v)
        spikes.append(fired.astype(np.uint8))
    net = load_nir(graph, T=12, semantics="norse")
    assert net.input_node.shape == (3,)          # Norse's batch dimension dropped
    np.testing.assert_array_equal(_spikes(net, "lif", units), np.stack(spikes))
    assert any("dt = 0.001" in line for line in net.metadata["nir"]["semantics"]["warnings"])


def test_unnamed_producer_warns_and_metadata_names_it():
    graph, _ = _dense_if()
    literal = load_nir(graph, T=4)
    record = literal.metadata["nir"]["semantics"]
    assert record["profile"] == "nir" and record["source"] == "default"
    assert "--nir-semantics" in record["warnings"][0]
    named, _ = _dense_if(metadata={"producer": "spikingjelly"})
    record = load_nir(named, T=4).metadata["nir"]["semantics"]
    assert record["profile"] == "spikingjelly" and record["source"] == "graph metadata"
    assert record["fire_rule"] == ">="


@pytest.mark.parametrize("semantics, assume, message", [
    ("brian2", None, "--nir-semantics 'brian2' is not one of"),
    ("nir", {"reset": "sometimes"}, "--nir-assume reset=sometimes is not understood"),
])
def test_bad_profile_options_are_one_line_errors(semantics, assume, message):
    graph, _ = _dense_if()
    with pytest.raises(InputError, match=message):
        load_nir(graph, T=4, semantics=semantics, assume=assume)


def _conv_graph(pool_kind, pool_k, conv_stride, channels=3, threshold_per_channel=None, nested=False):
    weight = RNG.uniform(-0.3, 0.6, (channels, 2, 3, 3))
    bias = RNG.uniform(0.0, 0.05, channels)
    pool = (nir.SumPool2d if pool_kind == "sum" else nir.AvgPool2d)(
        kernel_size=np.array([pool_k, pool_k]), stride=np.array([pool_k, pool_k]), padding=np.array([0, 0]))
    threshold = np.ones(channels) if threshold_per_channel is None else threshold_per_channel
    padding = 1 if conv_stride == 2 else 0
    size = ((10 + 2 * padding - 3) // conv_stride + 1 - pool_k) // pool_k + 1
    neurons = nir.IF(r=np.ones(channels), v_threshold=threshold, v_reset=np.zeros(channels))
    nodes = {"in": nir.Input(input_type=np.array([2, 10, 10])),
             "conv": nir.Conv2d(input_shape=None, weight=weight, bias=bias, stride=conv_stride, padding=padding,
                                dilation=1, groups=1),
             "pool": pool, "if": neurons, "flat": nir.Flatten(input_type=None, start_dim=0, end_dim=-1),
             "fc": nir.Linear(weight=RNG.uniform(-1, 1, (2, channels * size * size))),
             "out": nir.Output(output_type=np.array([2]))}
    edges = [("in", "conv"), ("conv", "pool"), ("pool", "if"), ("if", "flat"), ("flat", "fc"), ("fc", "out")]
    if nested:   # the neurons inside a subgraph with its own Input and Output
        sub = _graph({"input": nir.Input(input_type=np.array([channels, size, size])), "if": neurons,
                      "output": nir.Output(output_type=np.array([channels, size, size]))},
                     [("input", "if"), ("if", "output")])
        nodes["layer"] = sub
        del nodes["if"]
        edges = [(a.replace("if", "layer"), b.replace("if", "layer")) for a, b in edges]
    return _graph(nodes, edges), weight, bias, threshold


@pytest.mark.parametrize("pool_kind, pool_k, conv_stride, nested", [
    ("sum", 2, 1, False), ("avg", 2, 1, False), ("sum", 2, 2, True), ("avg", 4, 1, False)])
def test_pooled_currents_are_composed_into_the_convolution(pool_kind, pool_k, conv_stride, nested):
    """conv -> pool -> neuron (Sinabs, SpikingJelly) runs as torch's conv then pool then an IF loop."""
    threshold = np.array([0.8, 1.0, 1.3])     # per channel
    graph, weight, bias, _ = _conv_graph(pool_kind, pool_k, conv_stride, threshold_per_channel=threshold,
                                         nested=nested)
    units = RNG.integers(0, 256, (4, 2, 10, 10))
    net = load_nir(graph, T=6, semantics="nir")
    current = F.conv2d(torch.from_numpy(units / 255.0), torch.from_numpy(weight), torch.from_numpy(bias),
                       stride=conv_stride, padding=1 if conv_stride == 2 else 0)
    pooled = (F.avg_pool2d(current, pool_k) if pool_kind == "avg"
              else F.avg_pool2d(current, pool_k, divisor_override=1)).numpy()
    v, spikes = np.zeros_like(pooled), []
    for _ in range(6):
        v = v + pooled
        fired = v > threshold.reshape(1, -1, 1, 1)
        v = np.where(fired, 0.0, v)
        spikes.append(fired.astype(np.uint8))
    key = "layer.if" if nested else "if"
    got = _spikes(net, key, units)
    assert got.shape == (6,) + pooled.shape
    np.testing.assert_array_equal(got, np.stack(spikes))
    assert any("composed into the convolution" in note for note in net.metadata["nir"]["notes"])


def test_pool_of_a_current_shared_with_another_consumer_is_refused():
    graph, *_ = _conv_graph("sum", 2, 1)
    graph.nodes["conv2"] = nir.Conv2d(input_shape=None, weight=np.ones((1, 3, 1, 1)), bias=np.zeros(1), stride=1,
                                      padding=0, dilation=1, groups=1)
    graph.edges.append(("conv", "conv2"))
    with pytest.raises(InputError, match="pools the current of 'conv'"):
        load_nir(graph, T=4, semantics="nir")


def test_self_recurrent_population_reads_its_previous_spikes():
    """snnTorch-style RLeaky subgraph flattened by nirtorch: '1.lif' with '1.w_rec' back onto it,
    plus an explicit recurrent Affine whose bias joins the feed-forward bias."""
    n = 6
    w_in, w_rec = RNG.uniform(0.0, 0.5, (n, 4)), RNG.uniform(-0.6, 0.6, (n, n))
    rec_bias = RNG.uniform(0.0, 0.05, n)
    nodes = {"in": nir.Input(input_type=np.array([4])), "fc": nir.Linear(weight=w_in),
             "1.lif": nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "1.w_rec": nir.Affine(weight=w_rec, bias=rec_bias),
             "out_fc": nir.Linear(weight=np.ones((2, n))), "out": nir.Output(output_type=np.array([2]))}
    edges = [("in", "fc"), ("fc", "1.lif"), ("1.lif", "1.w_rec"), ("1.w_rec", "1.lif"), ("1.lif", "out_fc"),
             ("out_fc", "out")]
    net = load_nir(_graph(nodes, edges), T=10, semantics="nir")
    units = RNG.integers(0, 256, (8, 4))
    v, previous, spikes = np.zeros((8, n)), np.zeros((8, n)), []
    for _ in range(10):
        v = v + units / 255.0 @ w_in.T + previous @ w_rec.T + rec_bias
        fired = v > 1.0
        v = np.where(fired, 0.0, v)
        previous = fired.astype(np.float64)
        spikes.append(fired.astype(np.uint8))
    np.testing.assert_array_equal(_spikes(net, "1.lif", units), np.stack(spikes))


def test_feedback_from_a_later_population_is_refused():
    n = 3
    nodes = {"in": nir.Input(input_type=np.array([2])), "fc": nir.Linear(weight=np.ones((n, 2))),
             "a": nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "fc2": nir.Linear(weight=np.ones((n, n))),
             "b": nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "back": nir.Linear(weight=np.ones((n, n))),
             "out_fc": nir.Linear(weight=np.ones((2, n))), "out": nir.Output(output_type=np.array([2]))}
    edges = [("in", "fc"), ("fc", "a"), ("a", "fc2"), ("fc2", "b"), ("b", "back"), ("back", "a"),
             ("b", "out_fc"), ("out_fc", "out")]
    with pytest.raises(InputError, match="self-recurrent populations only"):
        load_nir(_graph(nodes, edges), T=4, semantics="nir")


def test_delay_nodes_become_axonal_delays_in_whole_steps():
    n = 5
    delays = np.array([0, 1, 2, 3, 5])
    w1, w2 = RNG.uniform(0.2, 0.8, (n, 3)), RNG.uniform(0.3, 1.0, (4, n))
    nodes = {"in": nir.Input(input_type=np.array([3])), "fc": nir.Linear(weight=w1),
             "a": nir.IF(r=np.full(n, 1e3), v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "d": nir.Delay(delay=delays * 1e-3), "fc2": nir.Linear(weight=w2),
             "b": nir.IF(r=np.full(4, 1e3), v_threshold=np.ones(4), v_reset=np.zeros(4)),
             "out_fc": nir.Linear(weight=np.ones((2, 4))), "out": nir.Output(output_type=np.array([2]))}
    edges = [("in", "fc"), ("fc", "a"), ("a", "d"), ("d", "fc2"), ("fc2", "b"), ("b", "out_fc"), ("out_fc", "out")]
    graph = _graph(nodes, edges)
    with pytest.raises(InputError, match=r"'d' \(Delay\).*not whole"):
        load_nir(graph, T=12, semantics="nir")           # dt = 1: 0.001 steps
    net = load_nir(graph, T=12, semantics="nir", dt=1e-3)
    units = RNG.integers(0, 256, (6, 3))
    x = units / 255.0
    va, vb, a_spikes, b_spikes = np.zeros((6, n)), np.zeros((6, 4)), [], []
    for t in range(12):
        va = va + x @ w1.T
        fa = va > 1.0
        va = np.where(fa, 0.0, va)
        a_spikes.append(fa.astype(np.float64))
        delayed = np.stack([a_spikes[t - d][:, j] if t - d >= 0 else np.zeros(6) for j, d in enumerate(delays)], 1)
        vb = vb + delayed @ w2.T
        fb = vb > 1.0
        vb = np.where(fb, 0.0, vb)
        b_spikes.append(fb.astype(np.uint8))
    np.testing.assert_array_equal(_spikes(net, "b", units), np.stack(b_spikes))


def test_spyx_spikes_one_step_late_from_transposed_weights():
    """Spyx: s_t = (v_{t-1} > thr), v_t = beta v_{t-1} + x_t - thr s_t, weights stored (in, out)."""
    beta, n = 0.75, 4
    stored = RNG.uniform(0.2, 0.9, (3, n))          # (in, out), as Spyx writes it
    nodes = {"in": nir.Input(input_type=np.array([3])), "linear": nir.Linear(weight=stored),
             "LIF": nir.LIF(tau=np.full(n, 1.0 / (1 - beta)), r=np.full(n, beta), v_leak=np.zeros(n),
                            v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "out": nir.Output(output_type=np.array([n]))}
    graph = _graph(nodes, [("in", "linear"), ("linear", "LIF"), ("LIF", "out")])
    units = RNG.integers(0, 256, (6, 3))
    v, emitted = np.zeros((6, n)), []
    for t in range(10):
        spike = (v > 1.0).astype(np.float64)        # decided from the state before the step
        v = beta * v + units / 255.0 @ stored - 1.0 * spike
        emitted.append(spike)
    net = load_nir(graph, T=10, semantics="spyx")
    trace = execute.run(net, execute.encode(net, units))
    # snnc's population decides at step t what Spyx emits at t + 1; its consumers read it a step later
    np.testing.assert_array_equal(trace.spikes[net.metadata["nir"]["populations"]["LIF"]][:-1],
                                  np.stack(emitted)[1:].astype(np.uint8))
    np.testing.assert_array_equal(trace.readout_steps, np.cumsum(np.stack(emitted), axis=0))
    assert any("threshold" in line for line in net.metadata["nir"]["semantics"]["warnings"])


def test_lava_dl_layers_shift_their_output_by_one_step():
    graph, w1 = _dense_if()
    units = RNG.integers(0, 256, (5, 6))
    shifted = load_nir(graph, T=8, semantics="lava-dl")
    plain = load_nir(graph, T=8, semantics="nir")
    np.testing.assert_array_equal(_spikes(shifted, "if", units), _spikes(plain, "if", units))
    readout = shifted.node("out_fc")
    assert readout.delay is not None and np.all(readout.delay == 1)
    late = execute.run(shifted, execute.encode(shifted, units)).readout_steps
    early = execute.run(plain, execute.encode(plain, units)).readout_steps
    np.testing.assert_array_equal(late[1:], early[:-1])


@pytest.mark.parametrize("producer, variant", [("snntorch", "leaky-subtract"), ("norse", "lifbox"),
                                               ("sinabs", "lif-single-subtract"), ("spikingjelly", "if-hard")])
def test_the_warning_names_the_producer_a_graph_looks_like(producer, variant, tmp_path):
    """Read without --nir-semantics, a producer's own export is read literally, with a warning
    that names the producer whose exporter's signature it carries (a hint, never applied)."""
    import producer_nets as nets

    path = tmp_path / "graph.nir"
    nets.PRODUCERS[producer].export(nets.build(producer, "dense", variant), path, nets.input_shape("dense"))
    graph = nir.read(str(path), type_check=False)
    try:
        record = load_nir(graph, T=4).metadata["nir"]["semantics"]
    except InputError as error:      # a literal reading may not load at all (Norse's time constants)
        assert "--nir-semantics" in str(error)
        from snnc.frontends import nir_frontend, nir_semantics

        assert nir_semantics.look_alike(nir_frontend._flatten(graph)[0]) == producer
        return
    assert record["profile"] == "nir"
    assert f"--nir-semantics {producer})" in record["warnings"][0]


def test_scalar_parameters_hold_for_the_whole_layer():
    """0-d parameters (one value for the layer), which several exporters cannot write but the format
    allows, mean the same as per-neuron copies."""
    w = RNG.uniform(0.0, 1.0, (4, 3))

    def graph(value):
        nodes = {"in": nir.Input(input_type=np.array([3])), "fc": nir.Affine(weight=w, bias=np.zeros(4)),
                 "lif": nir.LIF(tau=value(2e-3), r=value(2.0), v_leak=value(0.0), v_threshold=value(0.5),
                                v_reset=value(0.0)),
                 "out_fc": nir.Linear(weight=np.ones((2, 4))), "out": nir.Output(output_type=np.array([2]))}
        return _graph(nodes, [("in", "fc"), ("fc", "lif"), ("lif", "out_fc"), ("out_fc", "out")])

    units = RNG.integers(0, 256, (5, 3))
    scalar = load_nir(graph(lambda v: np.array(v)), T=6, dt=1e-3)
    per_neuron = load_nir(graph(lambda v: np.full(4, v)), T=6, dt=1e-3)
    assert _spikes(scalar, "lif", units).any()
    np.testing.assert_array_equal(_spikes(scalar, "lif", units), _spikes(per_neuron, "lif", units))


def test_a_bias_into_a_current_with_memory_is_refused_at_folding():
    """Loihi adds a bias to the membrane; into a decaying current (CubaLIF) a synapse bias grows
    over the first steps instead, so moving it is refused rather than changing the spikes."""
    from snnc.passes import fold_all

    n = 3
    nodes = {"in": nir.Input(input_type=np.array([2])),
             "fc": nir.Affine(weight=np.ones((n, 2)), bias=np.full(n, 0.1)),
             "lif": nir.CubaLIF(tau_mem=np.full(n, 4.0), tau_syn=np.full(n, 2.0), r=np.full(n, 4.0), v_leak=np.zeros(n),
                                v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.full(n, 2.0)),
             "out_fc": nir.Linear(weight=np.ones((2, n))), "out": nir.Output(output_type=np.array([2]))}
    graph = _graph(nodes, [("in", "fc"), ("fc", "lif"), ("lif", "out_fc"), ("out_fc", "out")])
    net = load_nir(graph, T=4, dt=1.0)
    with pytest.raises(InputError, match="node 'fc': its bias feeds the synaptic current of 'fc', which has memory"):
        fold_all(net)
    graph.nodes["fc"] = nir.Affine(weight=np.ones((n, 2)), bias=np.zeros(n))
    fold_all(load_nir(graph, T=4, dt=1.0))      # a zero bias is no bias


def _dense_cases():
    import producer_nets as nets

    return [case for case in nets.cases() if case[1] == "dense"]


@pytest.fixture(scope="module")
def producer_graphs(tmp_path_factory):
    """Every producer's dense export of every variant (tests/producer_nets.py)."""
    import producer_nets as nets

    directory = tmp_path_factory.mktemp("producers")
    paths = {}
    for case in _dense_cases():
        path = directory / ("_".join(case) + ".nir")
        nets.PRODUCERS[case[0]].export(nets.build(*case), path, nets.input_shape("dense"))
        paths[case] = path
    return paths


def test_every_profile_reads_every_producer_graph_or_refuses_in_one_line(producer_graphs):
    """Whatever profile a user picks for whatever producer's graph: a network or one InputError
    line, never another exception."""
    from snnc.frontends.nir_semantics import PROFILES

    outcomes = {"loaded": 0, "refused": 0}
    for path in producer_graphs.values():
        for profile in PROFILES:
            try:
                load_nir(path, T=4, semantics=profile)
                outcomes["loaded"] += 1
            except InputError as error:
                assert "\n" not in str(error) and str(error)
                outcomes["refused"] += 1
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0


def _mutations(graph):
    """Broken variants of a producer's graph: an edge dropped, an edge added backwards, a
    parameter of the wrong shape, a weight made 3-D."""
    import copy

    rng = np.random.default_rng(11)
    keys = list(graph.nodes)
    for index in range(len(graph.edges)):
        broken = copy.deepcopy(graph)
        del broken.edges[index]
        yield broken
    for _ in range(4):
        broken = copy.deepcopy(graph)
        a, b = rng.choice(keys, 2, replace=False)
        broken.edges.append((str(a), str(b)))
        yield broken
    for key, node in graph.nodes.items():
        for field in ("v_threshold", "tau", "weight"):
            if hasattr(node, field):
                broken = copy.deepcopy(graph)
                setattr(broken.nodes[key], field, np.ones((2, 3, 5)))
                yield broken


def test_broken_producer_graphs_are_refused_in_one_line(producer_graphs):
    tried = 0
    for case, path in producer_graphs.items():
        if case[2] not in ("leaky-subtract", "lif", "iaf-single-subtract", "if-hard"):
            continue
        for broken in _mutations(nir.read(str(path), type_check=False)):
            tried += 1
            try:
                load_nir(broken, T=4, semantics=case[0], assume={"spikes": "single"})
            except InputError as error:
                assert "\n" not in str(error) and str(error)
    assert tried > 40


def test_multi_spike_networks_round_trip_through_nir_and_netx_refuses_them(tmp_path):
    """snnc's NIR export keeps max_spikes in its node metadata (NIR cannot say it); netx refuses."""
    from snnc.errors import DesignRuleError
    from snnc.exporters.netx_export import export_netx
    from snnc.exporters.nir_export import export_nir

    graph, w1 = _dense_if()
    graph.nodes["fc"].weight = w1 * 4
    net = load_nir(graph, T=6, semantics="sinabs")
    export_nir(net, tmp_path / "multi.nir")
    back = load_nir(tmp_path / "multi.nir")
    assert back.node("fc").neuron.max_spikes == net.node("fc").neuron.max_spikes > 1
    units = RNG.integers(0, 256, (4, 6))
    np.testing.assert_array_equal(execute.run(back, execute.encode(back, units)).spikes["fc"],
                                  execute.run(net, execute.encode(net, units)).spikes["fc"])
    from snnc.passes import fold_all
    from snnc.passes.quantize import quantize
    from snnc.targets import load_target

    with pytest.raises(DesignRuleError, match="several spikes per step"):
        export_netx(quantize(fold_all(net), load_target("loihi2")), tmp_path / "multi.net")
