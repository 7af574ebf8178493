"""Recurrent synapses and axonal delays on the cycle simulator, Lava and the mapper.

Small hand-built fixed networks (a self-recurrent dense layer, recurrent layers after a conv,
axonal delays 0..5 on conv and linear inputs, through pooling and flattening) and a float one
quantized by the compiler: the integer reference equals a step-by-step loop written here from
the IR contract (docs/ir.md), and the cycle simulator and Lava equal the reference spike for
spike; the simulator's synaptic ops and active updates equal counts made here from the spikes;
the mapper counts recurrent synapses and refuses delays above the target's max_delay.
"""
import dataclasses

import netfactory
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnc import energy, fixedpoint, summary
from snnc.backends import cycle, lava_backend, reference
from snnc.compiler import compile_network
from snnc.errors import DesignRuleError, InputError
from snnc.ir import Network, Neuron, Node
from snnc.passes import mapping as mp
from snnc.targets import load_energy_table, load_target

LOIHI1, LOIHI2 = load_target("loihi1"), load_target("loihi2")
CONV = {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]}


def population(shape, threshold, kind="spiking", reset="hard", v_decay=0, u_decay=4095):
    """A fixed-point population: IF/LIF with hard or soft reset, or the readout integrator."""
    spiking = kind == "spiking"
    level = np.full(shape, threshold, np.int64)
    return Neuron(kind=kind, threshold=level if spiking else None, reset=reset if spiking else "none",
                  reset_amount=level if reset == "soft" else None, bias=np.zeros(shape, np.int64),
                  initial_state=np.zeros(shape, np.int64), v_decay=v_decay, u_decay=u_decay)


def fixed(name, nodes, T=8, target=LOIHI2):
    return Network(name=name, T=T, readout="mean", nodes=nodes, arithmetic=dict(target.arithmetic, kind="fixed"),
                   encoding={"scale": 1 / 255, "max": 255}, metadata={"target": target.name})


def local_recurrence(shape, rng, low=-40, high=40):
    """Recurrent weights [N, N] between neurons at most one position apart (every channel), the rest 0."""
    channels, height, width = shape
    c, y, x = np.unravel_index(np.arange(channels * height * width), shape)
    near = (np.abs(y[:, None] - y[None, :]) <= 1) & (np.abs(x[:, None] - x[None, :]) <= 1)
    return np.where(near, rng.integers(low, high, near.shape), 0)


def recurrent_dense(seed=0, target=LOIHI2):
    """input (16) -> fc (12, LIF, self-recurrent, about half the pairs connected) -> readout (3)."""
    rng = np.random.default_rng(seed)
    return fixed("recurrent_dense", [
        Node("input", "input", [], (16,)),
        Node("fc", "linear", ["input"], (12,), weight=rng.integers(-20, 40, (12, 16)),
             neuron=population((12,), 200_000, v_decay=300),
             recurrent=rng.integers(-127, 128, (12, 12)) * (rng.random((12, 12)) < 0.5)),
        Node("readout", "linear", ["fc"], (3,), weight=rng.integers(-40, 40, (3, 12)),
             neuron=population((3,), 0, kind="integrator")),
    ], target=target)


def recurrent_after_conv(seed=1, delays=False):
    """input (2, 6, 6) -> conv (4, 6, 6, recurrent between neighbours, soft reset) -> sumpool 2 ->
    flatten -> fc (10, recurrent, current kept) -> readout (3); with `delays`, axonal delays
    0..5 on the conv's and the fc's inputs too."""
    rng = np.random.default_rng(seed)
    conv = Node("conv", "conv2d", ["input"], (4, 6, 6), attrs=dict(CONV), weight=rng.integers(-30, 50, (4, 2, 3, 3)),
                neuron=population((4, 6, 6), 250_000, reset="soft"),
                recurrent=local_recurrence((4, 6, 6), rng, -120, 120))
    fc = Node("fc", "linear", ["flatten"], (10,), weight=rng.integers(-40, 60, (10, 36)),
              neuron=population((10,), 80_000, u_decay=2048), recurrent=rng.integers(-60, 60, (10, 10)))
    if delays:
        conv.delay = rng.integers(0, 6, (2, 6, 6))
        fc.delay = rng.integers(0, 6, (36,))
    return fixed("recurrent_conv", [
        Node("input", "input", [], (2, 6, 6)), conv,
        Node("pool", "sumpool", ["conv"], (4, 3, 3), attrs={"kernel": 2, "stride": 2}),
        Node("flatten", "flatten", ["pool"], (36,)), fc,
        Node("readout", "linear", ["fc"], (3,), weight=rng.integers(-40, 40, (3, 10)),
             neuron=population((3,), 0, kind="integrator")),
    ])


def delayed_conv(seed=2, target=LOIHI2):
    """input (2, 6, 6) -> conv (3, 6, 6) with delays 0..5 -> flatten -> fc (8) with delays 0..5 ->
    readout (3) with delays 0..5 (conv and linear inputs, no recurrence)."""
    rng = np.random.default_rng(seed)
    return fixed("delayed", [
        Node("input", "input", [], (2, 6, 6)),
        Node("conv", "conv2d", ["input"], (3, 6, 6), attrs=dict(CONV), weight=rng.integers(-30, 50, (3, 2, 3, 3)),
             neuron=population((3, 6, 6), 200_000), delay=rng.integers(0, 6, (2, 6, 6))),
        Node("flatten", "flatten", ["conv"], (108,)),
        Node("fc", "linear", ["flatten"], (8,), weight=rng.integers(-20, 40, (8, 108)),
             neuron=population((8,), 40_000, v_decay=500), delay=rng.integers(0, 6, (108,))),
        Node("readout", "linear", ["fc"], (3,), weight=rng.integers(-40, 40, (3, 8)),
             neuron=population((3,), 0, kind="integrator"), delay=rng.integers(0, 6, (8,))),
    ], target=target)


def float_population(shape, threshold, v_decay=0.25):
    return Neuron(kind="spiking", threshold=np.full(shape, threshold), reset="hard", reset_amount=None,
                  bias=np.zeros(shape), initial_state=np.zeros(shape), v_decay=v_decay, u_decay=1.0)


def quantized(seed=5):
    """A float network (conv with delays 0..3 -> flatten -> recurrent fc -> readout), folded and
    quantized for loihi2 by the compiler."""
    rng = np.random.default_rng(seed)
    readout = Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None, bias=np.zeros(3),
                     initial_state=np.zeros(3), v_decay=0.0, u_decay=1.0)
    net = Network(name="float", T=8, readout="mean", encoding={"scale": 1 / 255, "max": 255}, nodes=[
        Node("input", "input", [], (2, 6, 6)),
        Node("conv", "conv2d", ["input"], (4, 6, 6), attrs=dict(CONV), weight=rng.normal(0.3, 0.5, (4, 2, 3, 3)),
             neuron=float_population((4, 6, 6), 0.3), delay=rng.integers(0, 4, (2, 6, 6))),
        Node("flatten", "flatten", ["conv"], (144,)),
        Node("fc", "linear", ["flatten"], (10,), weight=rng.normal(0.0, 0.2, (10, 144)),
             neuron=float_population((10,), 1.0), recurrent=rng.normal(0, 0.4, (10, 10))),
        Node("readout", "linear", ["fc"], (3,), weight=rng.normal(0, 0.5, (3, 10)), neuron=readout),
    ])
    return compile_network(net, LOIHI2).fixed


NETWORKS = {"recurrent_dense": recurrent_dense, "recurrent_conv": recurrent_after_conv, "delayed": delayed_conv,
            "recurrent_delayed": lambda: recurrent_after_conv(delays=True), "quantized": quantized}


def images(net, count=5, seed=3, density=0.6):
    """Direct-encoded inputs [T, count, ...]: pixels 0..31, a fraction `density` of them non-zero."""
    rng = np.random.default_rng(seed)
    shape = (count,) + tuple(net.input_node.shape)
    pixels = rng.integers(0, 32, shape) * (rng.random(shape) < density)
    return np.broadcast_to(pixels, (net.T,) + pixels.shape).astype(np.int64)


# ------------------------------------------------------------- the contract, step by step

def _read_delayed(history: np.ndarray, delay, t: int) -> np.ndarray:
    """[B, *shape] at step t through axonal delays: element j from step t - delay[j] (0 before 0)."""
    flat = history.reshape(history.shape[:2] + (-1,))
    delay = np.zeros(flat.shape[2], np.int64) if delay is None else np.asarray(delay).reshape(-1)
    out = np.zeros(flat.shape[1:])
    for j, d in enumerate(delay):
        if t - d >= 0:
            out[:, j] = flat[t - d, :, j]
    return out.reshape(history.shape[1:])


def stepwise(net: Network, inputs: np.ndarray, record: dict | None = None) -> tuple[dict, np.ndarray]:
    """Spikes of every spiking node and the readout's per-step v, from the IR contract written
    as a plain loop over steps and nodes (fixedpoint.cuba_step is the one neuron rule). `record`
    receives, per population, its delayed input "x", its integer input "z" (recurrent input
    included) and its v after reset "v", each [T, B, ...]."""
    T, B = inputs.shape[:2]
    a = net.arithmetic
    outputs: dict[str, np.ndarray] = {}
    for node in net.nodes:
        if node.op == "input":
            outputs[node.name] = inputs.astype(np.float64)
            continue
        source = outputs[node.inputs[0]]
        reshaped = netfactory.plain_reshape_op(node, source)
        if reshaped is not None:
            outputs[node.name] = reshaped
            continue
        n = node.neuron
        spiking = n.kind == "spiking"
        size = int(np.prod(node.shape))
        rule = dict(fire_level=fixedpoint.fire_at(n.threshold, a["fire_rule"]).reshape(-1) if spiking
                    else fixedpoint.NEVER_FIRES,
                    reset_amount=np.asarray(n.reset_amount if n.reset == "soft" else 0, np.int64),
                    bias=np.asarray(n.bias, np.int64).reshape(-1),
                    keep_u=fixedpoint.current_keep(n.u_decay, a["decay_bits"]),
                    keep_v=fixedpoint.voltage_keep(n.v_decay, a["decay_bits"]), decay_bits=a["decay_bits"],
                    shift=a["activation_shift"], top=fixedpoint.register_top(a["state_bits"]),
                    current_saturates=a["current_overflow"] == "saturate",
                    voltage_saturates=a["voltage_overflow"] == "saturate",
                    hard=int(n.reset == "hard"), soft=int(n.reset == "soft"))
        if n.reset == "soft":
            rule["reset_amount"] = rule["reset_amount"].reshape(-1)
        u = np.zeros((B, size), np.int64)
        v = np.broadcast_to(np.asarray(n.initial_state, np.int64).reshape(-1), (B, size)).copy()
        fired = np.zeros((B, size), np.int64)
        out = np.zeros((T, B, size), np.int64)
        seen = {key: [] for key in ("x", "z", "v")}
        for t in range(T):
            x = _read_delayed(source, node.delay, t)
            seen["x"].append(x)
            if node.op == "linear":
                z = x @ np.asarray(node.weight, np.float64).T
            else:
                z = F.conv2d(torch.from_numpy(x), torch.from_numpy(np.asarray(node.weight, np.float64)),
                             stride=node.attrs["stride"], padding=node.attrs["padding"]).numpy()
            z = np.rint(z).astype(np.int64).reshape(B, size)
            if node.recurrent is not None:
                z = z + fired @ np.asarray(node.recurrent, np.int64).T
            u, v, fired, _, _ = fixedpoint.cuba_step(z, u, v, **rule)
            fired = fired.astype(np.int64)
            out[t] = fired if spiking else v
            seen["z"].append(z)
            seen["v"].append(v)
        if record is not None:
            record[node.name] = {key: np.stack(values) for key, values in seen.items()}
        outputs[node.name] = out.reshape((T, B) + tuple(node.shape)).astype(np.float64)
    spikes = {node.name: outputs[node.name].astype(np.uint8) for node in net.spiking_nodes()}
    return spikes, outputs[net.output_node.name].astype(np.int64)


def _without(net: Network, field: str) -> Network:
    plain = net.copy()
    for node in plain.nodes:
        setattr(node, field, None)
    return plain


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def case(request):
    """(network, inputs, reference trace), the reference checked against the loop above, active
    enough for the comparisons to mean something, and its recurrence and delays changing spikes."""
    net = NETWORKS[request.param]()
    net.validate()
    inputs = images(net)
    ref = reference.run(net, inputs)
    spikes, readout_steps = stepwise(net, inputs)
    for name, expected in spikes.items():
        assert np.array_equal(ref.spikes[name], expected), f"reference differs from the contract at {name}"
        assert 0.02 < expected.mean() < 0.8, f"layer {name} fires at rate {expected.mean()}"
    np.testing.assert_array_equal(ref.readout_steps, readout_steps)
    for field in ("recurrent", "delay"):
        if any(getattr(node, field) is not None for node in net.nodes):
            changed = stepwise(_without(net, field), inputs)[0]
            assert any(np.any(changed[name] != spikes[name]) for name in spikes), f"{field} changes nothing"
    return net, inputs, ref


# --------------------------------------------------------------------- cycle simulator

def test_cycle_simulator_is_spike_exact(case):
    net, inputs, ref = case
    netfactory.assert_same_trace(ref, cycle.run(net, inputs))


def _nonzero(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((np.asarray(values) != 0).astype(np.float64))


def _synapses_driven(node: Node, sent: torch.Tensor) -> torch.Tensor:
    """For non-zero input masks [N, *input shape], how many of them reach each output neuron
    through the node's structural synapses (all-ones weights)."""
    ones = torch.ones(node.weight.shape, dtype=torch.float64)
    if node.op == "linear":
        return sent @ ones.T
    return F.conv2d(sent, ones, stride=node.attrs["stride"], padding=node.attrs["padding"])


def _expected_synaptic_ops(net: Network, inputs: np.ndarray, ref) -> dict[str, float]:
    """Per receiving layer: every non-zero value sent (a spike, a non-zero pooled count or pixel),
    at every step and whatever its delay, times the synapses it drives, recurrent ones included
    (a conv/linear of the non-zero mask with all-ones weights counts (value, synapse) pairs)."""
    tensors = {net.input_node.name: inputs.astype(np.float64)}
    tensors.update({name: spikes.astype(np.float64) for name, spikes in ref.spikes.items()})
    for node in net.nodes:
        if node.op in ("flatten", "sumpool"):
            tensors[node.name] = netfactory.plain_reshape_op(node, tensors[node.inputs[0]])
    expected = {}
    for node in net.nodes:
        if node.neuron is None:
            continue
        ops = float(_synapses_driven(node, _nonzero(tensors[node.inputs[0]]).flatten(0, 1)).sum())
        if node.recurrent is not None:
            fired = _nonzero(ref.spikes[node.name]).reshape(-1, int(np.prod(node.shape)))
            ops += float((fired @ _nonzero(node.recurrent).T).sum())
        expected[node.name] = ops
    return expected


@pytest.mark.parametrize("limits", [{}, {"neurons_per_core": 16}])
def test_cycle_synaptic_ops_count_every_spike_times_its_fan_out(case, limits):
    net, inputs, ref = case
    target = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, **limits))
    mapping = mp.map_to_cores(net, target)
    trace, counts = cycle.simulate(net, mapping, target, inputs)
    netfactory.assert_same_trace(ref, trace)
    for name, ops in _expected_synaptic_ops(net, inputs, ref).items():
        assert counts.layers[name]["synaptic_op"] == ops, name


@pytest.mark.parametrize("name,density", [("delayed", 0.6), ("recurrent_conv", 0.03)])
def test_active_updates_follow_delays_and_recurrent_spikes(name, density):
    """A neuron's update is active when input arrives for its step (after the axon's delay, or a
    recurrent spike of the step before) or its u or v is non-zero at the start of the step. In
    populations that keep no current (u_decay = 4095: u after a step is z << shift, non-zero iff
    z is) and have no bias, the active updates follow from the loop's delayed inputs, z and v.
    (Sparse pixels leave conv neurons whose only input is a neighbour's recurrent spike.)"""
    net = NETWORKS[name]()
    inputs = images(net, density=density)
    record = {}
    spikes = stepwise(net, inputs, record)[0]
    _, counts = cycle.simulate(net, mp.map_to_cores(net, LOIHI2), LOIHI2, inputs)
    depth = mp.analyse(net)
    chip_steps = net.T + max(layer.depth for layer in depth.values())
    checked = [node for node in net.nodes if node.neuron is not None and node.neuron.u_decay == 4095]
    assert checked
    for node in checked:
        seen, T, B = record[node.name], net.T, inputs.shape[1]
        assert not np.any(node.neuron.bias)
        received = _synapses_driven(node, _nonzero(seen["x"]).flatten(0, 1)).numpy().reshape(T, B, -1) > 0
        if node.recurrent is not None:
            fired = spikes[node.name].reshape(T, B, -1).astype(np.float64)
            received[1:] |= (fired[:-1] @ (node.recurrent != 0).T) > 0
        busy = np.zeros_like(received)
        busy[1:] = (seen["z"][:-1] != 0) | (seen["v"][:-1] != 0)
        active = int((received | busy).sum())
        neurons = int(np.prod(node.shape))
        assert counts.layers[node.name]["neuron_update_active"] == active, node.name
        assert counts.layers[node.name]["neuron_update_inactive"] == chip_steps * B * neurons - active, node.name


def test_recurrent_messages_and_hops_by_hand():
    """fc0 and fc1 on cores (0,0) and (0,1) (tiles of one core), the readout on (1,1). Pixel 0
    drives fc0 at every step; fc1 fires on fc0's spike of the step before. Recurrent synapses:
    0 -> 1 and 1 -> {0, 1}, so a spike of fc0 is one message one hop east, a spike of fc1 one
    message one hop west and one inside its tile."""
    target = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, neurons_per_core=1, cores=4, mesh=[2, 2],
                                                     tile=[1, 1]))
    net = fixed("two", [
        Node("input", "input", [], (2,)),
        Node("fc", "linear", ["input"], (2,), weight=np.array([[40, 0], [0, 0]]), neuron=population((2,), 5_000),
             recurrent=np.array([[0, 100], [100, 100]])),
        Node("readout", "linear", ["fc"], (1,), weight=np.array([[1, 1]]),
             neuron=population((1,), 0, kind="integrator")),
    ], T=4, target=target)
    inputs = np.broadcast_to(np.array([[200, 0]]), (4, 1, 2)).astype(np.int64)
    mapping = mp.map_to_cores(net, target)
    assert [tuple(c["position"]) for c in mapping.cores] == [(0, 0), (0, 1), (1, 1)]
    trace, counts = cycle.simulate(net, mapping, target, inputs)
    netfactory.assert_same_trace(reference.run(net, inputs), trace)
    assert trace.spikes["fc"][:, 0].tolist() == [[1, 0], [1, 1], [1, 1], [1, 1]]
    fc = counts.layers["fc"]
    # 7 spikes to the readout (fc0: 1 hop east-west + 1 north-south, fc1: 1 north-south), and
    # recurrent: fc0 4 x 1 message, fc1 3 x 2 messages
    assert fc["messages"] == 7 + 4 + 6
    assert fc["spike_within_tile"] == 3
    assert fc["hop_east_west"] == 4 + (4 + 3)
    assert fc["hop_north_south"] == 7
    # pixel 0 at 4 steps x 2 synapses, fc0's spikes x 1 recurrent synapse, fc1's x 2
    assert fc["synaptic_op"] == 8 + 4 + 6
    assert counts.cores["synaptic_op"].tolist() == [4 + 3, 4 + 4 + 3, 7]


# ---------------------------------------------------------------------------------- Lava

@pytest.mark.slow
def test_lava_is_spike_exact(case):
    net, inputs, ref = case
    netfactory.assert_same_trace(ref, lava_backend.run(net, inputs))


@pytest.mark.slow
def test_lava_graph_uses_lavas_own_processes_and_a_sample_gap():
    net = recurrent_after_conv(delays=True)
    spec, _ = lava_backend.lava_spec(net)
    kinds = {p["name"]: p["type"] for p in spec["processes"]}
    assert kinds["conv.synapse"] == "delay_dense" and kinds["fc.synapse"] == "delay_dense"
    assert kinds["conv.recurrent"] == kinds["fc.recurrent"] == "dense"
    links = {(tuple(c["from"]), tuple(c["to"])) for c in spec["connections"]}
    assert (("fc", "s_out"), ("fc.recurrent", "s_in")) in links
    assert (("fc.recurrent", "a_out"), ("fc", "a_in")) in links
    largest = max(int(net.node("conv").delay.max()), int(net.node("fc").delay.max()))
    assert spec["gap"] == largest
    inputs = images(net, count=3)
    ref = reference.run(net, inputs)
    drained = lava_backend.run(net, inputs, period=net.T + spec["latency"] + spec["gap"])
    netfactory.assert_same_trace(ref, drained)
    with pytest.raises(InputError, match="period"):
        lava_backend.build_lava_graph(net, inputs=inputs, period=net.T)


# --------------------------------------------------------------------------------- mapping

def test_mapping_counts_recurrent_synapses_fan_in_and_fan_out():
    net = recurrent_dense()
    recurrent = net.node("fc").recurrent != 0
    one = mp.map_to_cores(net, LOIHI2)
    fc = one.layer("fc")
    assert fc["recurrent_synapses"] == recurrent.sum()
    assert fc["synapses"] == 12 * 16 + recurrent.sum()
    (core,) = [c for c in one.cores if c["layer"] == "fc"]
    assert core["fan_in"] == 16 + recurrent.any(axis=0).sum()       # each neuron with a target is an axon
    assert core["fan_out"] == 12 + recurrent.any(axis=0).sum()      # to the readout core and back to its own
    # one neuron per core: neuron i's core receives its row, neuron j's core sends to the cores of its column
    split = mp.map_to_cores(net, LOIHI2, partitions={"fc": mp.Partition(1, (1, 1))})
    cores = [c for c in split.cores if c["layer"] == "fc"]
    assert [c["synapses"] for c in cores] == list(16 + recurrent.sum(axis=1))
    assert [c["fan_in"] for c in cores] == list(16 + recurrent.sum(axis=1))
    assert [c["fan_out"] for c in cores] == list(1 + recurrent.sum(axis=0))
    bits = split.packing["bits_per_synapse"]
    assert [c["memory_bits"] for c in cores] == [64 * (16 * -(-bits // 64) + row) for row in recurrent.sum(axis=1)]


def test_recurrent_fan_in_limit_splits_the_layer():
    net = recurrent_dense()
    recurrent = net.node("fc").recurrent != 0
    limit = 16 + int(recurrent.sum(axis=1).max())
    target = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, fan_in_axons_per_core=limit))
    assert 16 + recurrent.any(axis=0).sum() > limit      # one core for the layer is too many
    mapping = mp.map_to_cores(net, target)
    assert mapping.layer("fc")["cores"] > 1
    assert all(c["fan_in"] <= limit for c in mapping.cores)
    tight = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, fan_in_axons_per_core=limit - 1))
    with pytest.raises(DesignRuleError, match=f"layer 'fc': fan-in {limit} axons exceeds"):
        mp.map_to_cores(net, tight)


def test_delays_cost_the_bits_of_the_largest_delay_per_synapse():
    """The conv on one core (3 channels x 6x6): each of the 2 x 36 input axons holds one synapse
    per output channel and per 3x3 window containing it (4 at a corner, 6 on an edge, 9 inside),
    its list packed in 64-bit words of bits_per_synapse (+ delay bits) each."""
    net = delayed_conv()
    plain = delayed_conv()
    for node in plain.nodes:
        node.delay = None
    whole = {"conv": mp.Partition(3, (6, 6))}
    # loihi2 holds a conv's kernels once (tests/test_mapping.py), but not a conv with axonal delays
    per_connection = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, conv_weights="per_connection"))
    delayed_layer = mp.map_to_cores(net, LOIHI2, partitions=whole).layer("conv")
    plain_mapping = mp.map_to_cores(plain, per_connection, partitions=whole)
    bits = plain_mapping.packing["bits_per_synapse"]
    extra = int(net.node("conv").delay.max()).bit_length()
    assert extra == 3 and delayed_layer["inputs"][0]["delay_bits"] == extra
    windows = np.array([2, 3, 3, 3, 3, 2])           # output rows (or columns) whose window holds a row
    synapses = 3 * windows[:, None] * windows[None, :]
    for layer, per_synapse in ((plain_mapping.layer("conv"), bits), (delayed_layer, bits + extra)):
        assert layer["memory_bits"] == 2 * 64 * int((-(-(synapses * per_synapse) // 64)).sum())


@pytest.mark.parametrize("target", [LOIHI1, LOIHI2])
def test_max_delay_design_rule_names_the_node(target):
    limit = target.limits["max_delay"]
    assert limit == 62
    net = delayed_conv()
    net.node("fc").delay[5] = limit
    mp.map_to_cores(net, target)
    net.node("fc").delay[5] = limit + 1
    with pytest.raises(DesignRuleError) as error:
        mp.map_to_cores(net, target)
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"layer 'fc': axonal delay of {limit + 1} steps exceeds {target.name}'s max_delay of "
                       f"{limit} steps")


# ---------------------------------------------------------------------- energy, summary

def test_summary_and_energy_count_recurrent_synapses():
    net = recurrent_dense()
    recurrent = int(np.count_nonzero(net.node("fc").recurrent))
    assert summary.synapse_count(net, net.node("fc")) == 12 * 16 + recurrent
    inputs = images(net)
    trace, counts = cycle.simulate(net, mp.map_to_cores(net, LOIHI2), LOIHI2, inputs)
    activity = energy.Activity(net)
    activity.add(trace, inputs)
    rows = {row["layer"]: row for row in energy._layer_rows(net, activity, cycle.energy_counts(counts),
                                                            LOIHI2.energy_pj, load_energy_table().energy_pj)}
    fc = rows["fc"]
    assert fc["flops"] == 12 * 16 + 12 * 12
    rate = trace.spikes["fc"].mean()
    # the input layer multiplies (MACs); its recurrent synapses accumulate the layer's own spikes
    assert fc["macs"] == 12 * 16
    assert fc["sops_estimate"] == pytest.approx(rate * net.T * 12 * 12)
    assert fc["synaptic_ops_counted"] == counts.layers["fc"]["synaptic_op"] / inputs.shape[1]



def test_lava_lif_cross_check_refuses_what_it_cannot_build():
    """run_lava_lif builds Lava's own LIF and Dense only: recurrence and delays are refused, not dropped."""
    for net in (recurrent_dense(target=LOIHI1), delayed_conv(target=LOIHI1)):
        with pytest.raises(DesignRuleError, match="no recurrent synapses, no delays"):
            lava_backend.run_lava_lif(net, images(net))
