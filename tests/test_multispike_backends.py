"""Graded multi-spike populations (neuron.max_spikes > 1) on the cycle simulator, Lava, the mapper
and the energy report.

Small hand-built fixed networks: dense layers and conv layers whose neurons emit counts 0..M per
step (soft and hard reset), a conv reading a conv's counts directly (Lava's Conv with graded
input), sum pooling and flattening of counts, a recurrent multi-spike layer. The integer
reference equals a step-by-step loop written here from the IR contract (docs/ir.md: n = 0 below
the fire level, else min(v // level, M)); the cycle simulator and Lava equal the reference count
for count; the simulator's messages and synaptic ops equal counts made here (one message per
neuron and step with a non-zero count, one op per synapse it drives); loihi1 refuses a
multi-spike population; mapping and energy rows say what the messages carry.
"""
import dataclasses
from pathlib import Path

import netfactory
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from snnc import energy, fixedpoint
from snnc.backends import cycle, lava_backend, reference
from snnc.errors import DesignRuleError, TargetError
from snnc.ir import Network, Neuron, Node
from snnc.passes import mapping as mp
from snnc.targets import load_energy_table, load_target

LOIHI1, LOIHI2 = load_target("loihi1"), load_target("loihi2")
WIDE = Path(__file__).resolve().parent.parent / "bench" / "targets" / "loihi2-wide.yaml"
CONV = {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]}


def population(shape, threshold, max_spikes=1, kind="spiking", reset="hard", v_decay=0, u_decay=4095):
    """A fixed-point population emitting counts up to `max_spikes`, or the readout integrator."""
    spiking = kind == "spiking"
    level = np.full(shape, threshold, np.int64)
    return Neuron(kind=kind, threshold=level if spiking else None, reset=reset if spiking else "none",
                  reset_amount=level if reset == "soft" else None, bias=np.zeros(shape, np.int64),
                  initial_state=np.zeros(shape, np.int64), v_decay=v_decay, u_decay=u_decay,
                  max_spikes=max_spikes if spiking else 1)


def fixed(name, nodes, T=8):
    return Network(name=name, T=T, readout="mean", nodes=nodes, arithmetic=dict(LOIHI2.arithmetic, kind="fixed"),
                   encoding={"scale": 1 / 255, "max": 255}, metadata={"target": LOIHI2.name})


def multispike_dense(reset="soft", seed=0):
    """input (16) -> fc1 (12, counts up to 3) -> fc2 (8, counts up to 4, reads fc1's counts) -> readout (3)."""
    rng = np.random.default_rng(seed)
    return fixed(f"dense_{reset}", [
        Node("input", "input", [], (16,)),
        Node("fc1", "linear", ["input"], (12,), weight=rng.integers(-20, 40, (12, 16)),
             neuron=population((12,), 40_000, max_spikes=3, reset=reset, v_decay=300)),
        Node("fc2", "linear", ["fc1"], (8,), weight=rng.integers(-30, 60, (8, 12)),
             neuron=population((8,), 7_500, max_spikes=4, reset=reset)),
        Node("readout", "linear", ["fc2"], (3,), weight=rng.integers(-40, 40, (3, 8)),
             neuron=population((3,), 0, kind="integrator")),
    ])


def multispike_conv(reset="hard", seed=1):
    """input (2, 6, 6) -> conv1 (4, 6, 6, counts up to 3) -> conv2 (4, 6, 6, counts up to 2, reads
    conv1's counts directly) -> sumpool 2 -> flatten -> fc (10, counts up to 3, recurrent) -> readout (3)."""
    rng = np.random.default_rng(seed)
    return fixed(f"conv_{reset}", [
        Node("input", "input", [], (2, 6, 6)),
        Node("conv1", "conv2d", ["input"], (4, 6, 6), attrs=dict(CONV), weight=rng.integers(-30, 50, (4, 2, 3, 3)),
             neuron=population((4, 6, 6), 60_000, max_spikes=3, reset=reset)),
        Node("conv2", "conv2d", ["conv1"], (4, 6, 6), attrs=dict(CONV), weight=rng.integers(-30, 50, (4, 4, 3, 3)),
             neuron=population((4, 6, 6), 14_000, max_spikes=2, reset=reset, v_decay=500)),
        Node("pool", "sumpool", ["conv2"], (4, 3, 3), attrs={"kernel": 2, "stride": 2}),
        Node("flatten", "flatten", ["pool"], (36,)),
        Node("fc", "linear", ["flatten"], (10,), weight=rng.integers(-20, 40, (10, 36)),
             neuron=population((10,), 100_000, max_spikes=3, reset=reset, u_decay=2048),
             recurrent=rng.integers(-40, 40, (10, 10)) * (rng.random((10, 10)) < 0.5)),
        Node("readout", "linear", ["fc"], (3,), weight=rng.integers(-40, 40, (3, 10)),
             neuron=population((3,), 0, kind="integrator")),
    ])


NETWORKS = {f"{builder.__name__}_{reset}": (builder, reset)
            for builder in (multispike_dense, multispike_conv) for reset in ("soft", "hard")}


def images(net, count=4, seed=3, density=0.6):
    """Direct-encoded inputs [T, count, ...]: pixels 0..31, a fraction `density` of them non-zero."""
    rng = np.random.default_rng(seed)
    shape = (count,) + tuple(net.input_node.shape)
    pixels = rng.integers(0, 32, shape) * (rng.random(shape) < density)
    return np.broadcast_to(pixels, (net.T,) + pixels.shape).astype(np.int64)


# ------------------------------------------------------------- the contract, step by step

def _count(v: np.ndarray, level: np.ndarray, most: int) -> np.ndarray:
    """The contract's count, written here: 0 below the fire level, else min(v // level, M)."""
    return np.where(v < level, 0, np.minimum(v // np.maximum(level, 1), most))


def stepwise(net: Network, inputs: np.ndarray) -> tuple[dict, np.ndarray]:
    """Counts of every spiking node [T, B, *shape] and the readout's per-step v, from the contract
    as a plain loop over steps (the register rules decayed/limited of snnc.fixedpoint, the count
    and the reset written here)."""
    T, B = inputs.shape[:2]
    a = net.arithmetic
    top, bits = fixedpoint.register_top(a["state_bits"]), a["decay_bits"]
    outputs: dict[str, np.ndarray] = {net.input_node.name: inputs.astype(np.int64)}
    for node in net.nodes[1:]:
        source = outputs[node.inputs[0]]
        reshaped = netfactory.plain_reshape_op(node, source)
        if reshaped is not None:
            outputs[node.name] = reshaped
            continue
        n = node.neuron
        size = int(np.prod(node.shape))
        level = fixedpoint.fire_at(n.threshold, a["fire_rule"]).reshape(-1) if n.kind == "spiking" else None
        keep_u, keep_v = fixedpoint.current_keep(n.u_decay, bits), fixedpoint.voltage_keep(n.v_decay, bits)
        u = np.zeros((B, size), np.int64)
        v = np.broadcast_to(np.asarray(n.initial_state, np.int64).reshape(-1), (B, size)).copy()
        counts = np.zeros((B, size), np.int64)
        out = np.zeros((T, B, size), np.int64)
        for t in range(T):
            x = torch.from_numpy(source[t].astype(np.float64))
            weight = torch.from_numpy(np.asarray(node.weight, np.float64))
            z = (x @ weight.T if node.op == "linear" else
                 F.conv2d(x, weight, stride=node.attrs["stride"], padding=node.attrs["padding"]))
            z = np.rint(z.numpy()).astype(np.int64).reshape(B, size)
            if node.recurrent is not None:
                z = z + counts @ np.asarray(node.recurrent, np.int64).T
            u = fixedpoint.limited(fixedpoint.decayed(u, keep_u, bits) + (z << a["activation_shift"]), top,
                                   a["current_overflow"] == "saturate")
            v = fixedpoint.limited(fixedpoint.decayed(v, keep_v, bits) + u + np.asarray(n.bias, np.int64).reshape(-1),
                                   top, a["voltage_overflow"] == "saturate")
            if n.kind == "spiking":
                counts = _count(v, level, n.max_spikes)
                if n.reset == "soft":
                    v = v - counts * np.asarray(n.reset_amount, np.int64).reshape(-1)
                else:
                    v = np.where(counts > 0, 0, v)
                out[t] = counts
            else:
                out[t] = v
        outputs[node.name] = out.reshape((T, B) + tuple(node.shape))
    spikes = {node.name: outputs[node.name].astype(np.uint8) for node in net.spiking_nodes()}
    return spikes, outputs[net.output_node.name]


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def case(request):
    """(network, inputs, reference trace): the reference checked against the loop above, every
    multi-spike layer emitting counts above 1 and silent neuron-steps too."""
    builder, reset = NETWORKS[request.param]
    net = builder(reset)
    net.validate()
    inputs = images(net)
    ref = reference.run(net, inputs)
    spikes, readout_steps = stepwise(net, inputs)
    for node in net.spiking_nodes():
        counts = spikes[node.name]
        assert np.array_equal(ref.spikes[node.name], counts), f"reference differs from the contract at {node.name}"
        assert counts.max() == node.neuron.max_spikes, f"{node.name} never reaches its largest count"
        assert 0.1 < (counts > 1).mean() and 0.03 < (counts == 0).mean(), f"{node.name}: counts {np.bincount(counts.ravel())}"
    np.testing.assert_array_equal(ref.readout_steps, readout_steps)
    return net, inputs, ref


# --------------------------------------------------------------------- cycle simulator

def _nonzero(values) -> torch.Tensor:
    return torch.from_numpy((np.asarray(values) != 0).astype(np.float64))


def _synapses_driven(node: Node, sent: torch.Tensor) -> torch.Tensor:
    """For non-zero masks [N, *input shape], how many of them reach each output neuron through the
    node's structural synapses (all-ones weights, padding excluded)."""
    ones = torch.ones(node.weight.shape, dtype=torch.float64)
    if node.op == "linear":
        return sent @ ones.T
    return F.conv2d(sent, ones, stride=node.attrs["stride"], padding=node.attrs["padding"])


def _tensors(net: Network, inputs: np.ndarray, spikes: dict) -> dict[str, np.ndarray]:
    """Every tensor on a synaptic path [T, B, ...]: the input, the counts, their pools and flattens."""
    tensors = {net.input_node.name: inputs.astype(np.float64)}
    tensors.update({name: counts.astype(np.float64) for name, counts in spikes.items()})
    for node in net.nodes:
        if node.op in ("flatten", "sumpool"):
            tensors[node.name] = netfactory.plain_reshape_op(node, tensors[node.inputs[0]])
    return tensors


def expected_synaptic_ops(net: Network, inputs: np.ndarray, spikes: dict) -> dict[str, float]:
    """Per receiving layer: every non-zero value sent (a pixel, a count, a pooled sum of counts),
    whatever its size, times the synapses it drives, recurrent ones included."""
    tensors = _tensors(net, inputs, spikes)
    expected = {}
    for node in net.nodes:
        if node.neuron is None:
            continue
        ops = float(_synapses_driven(node, _nonzero(tensors[node.inputs[0]]).flatten(0, 1)).sum())
        if node.recurrent is not None:
            sent = _nonzero(spikes[node.name]).reshape(-1, int(np.prod(node.shape)))
            ops += float((sent @ _nonzero(node.recurrent).T).sum())
        expected[node.name] = ops
    return expected


def test_cycle_simulator_equals_the_reference_count_for_count(case):
    net, inputs, ref = case
    netfactory.assert_same_trace(ref, cycle.run(net, inputs))


@pytest.mark.parametrize("limits", [{}, {"neurons_per_core": 16}])
def test_cycle_synaptic_ops_are_one_per_synapse_a_count_drives(case, limits):
    net, inputs, ref = case
    target = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, **limits))
    trace, counts = cycle.simulate(net, mp.map_to_cores(net, target), target, inputs)
    netfactory.assert_same_trace(ref, trace)
    for name, ops in expected_synaptic_ops(net, inputs, ref.spikes).items():
        assert counts.layers[name]["synaptic_op"] == ops, name
    for node in net.spiking_nodes():   # the spikes the messages stand for: the counts' sum
        assert counts.layers[node.name]["spikes"] == float(ref.spikes[node.name].sum()), node.name


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_cycle_messages_are_one_per_nonzero_count_and_destination_core(reset):
    """The dense network with each population split over several cores: every neuron-step with a
    non-zero count sends one message to each core of the next layer (a linear layer's neurons all
    read every input), however large the count."""
    net = multispike_dense(reset)
    inputs = images(net)
    target = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, neurons_per_core=2))
    mapping = mp.map_to_cores(net, target)
    trace, counts = cycle.simulate(net, mapping, target, inputs)
    cores = {layer["name"]: layer["cores"] for layer in mapping.layers}
    assert cores["fc2"] > 1 and cores["readout"] > 1
    spikes = stepwise(net, inputs)[0]
    assert counts.layers["fc1"]["messages"] == np.count_nonzero(spikes["fc1"]) * cores["fc2"]
    assert counts.layers["fc2"]["messages"] == np.count_nonzero(spikes["fc2"]) * cores["readout"]
    assert counts.layers["input"]["messages"] == np.count_nonzero(inputs) * cores["fc1"]
    assert (spikes["fc1"] > 1).any() and (spikes["fc2"] > 1).any()


def test_pooled_counts_above_a_byte_pair_are_summed_exactly():
    """Counts up to 200 pooled 2x2: the simulator's two-spikes-per-word pooling of binary spikes
    would carry between bytes; the pooled sums (up to 800) must be the reference's."""
    rng = np.random.default_rng(4)
    net = fixed("big_counts", [
        Node("input", "input", [], (1, 4, 4)),
        Node("conv", "conv2d", ["input"], (2, 4, 4), attrs=dict(CONV), weight=rng.integers(20, 60, (2, 1, 3, 3)),
             neuron=population((2, 4, 4), 64, max_spikes=200)),
        Node("pool", "sumpool", ["conv"], (2, 2, 2), attrs={"kernel": 2, "stride": 2}),
        Node("flatten", "flatten", ["pool"], (8,)),
        Node("readout", "linear", ["flatten"], (2,), weight=rng.integers(-3, 4, (2, 8)),
             neuron=population((2,), 0, kind="integrator")),
    ], T=3)
    inputs = images(net, density=1.0)
    spikes, readout_steps = stepwise(net, inputs)
    assert (spikes["conv"] >= 128).mean() > 0.5
    trace = cycle.run(net, inputs)
    np.testing.assert_array_equal(trace.spikes["conv"], spikes["conv"])
    np.testing.assert_array_equal(trace.readout_steps, readout_steps)


# ---------------------------------------------------------------------------------- Lava

@pytest.mark.slow
def test_lava_equals_the_reference_count_for_count(case):
    net, inputs, ref = case
    netfactory.assert_same_trace(ref, lava_backend.run(net, inputs))


def test_lava_graph_sends_counts_as_graded_spikes():
    """Every synapse reading a multi-spike layer takes graded messages wide enough for its count."""
    net = multispike_conv("soft")
    spec, _ = lava_backend.lava_spec(net)
    entries = {p["name"]: p for p in spec["processes"]}
    assert entries["conv1"]["max_spikes"] == 3 and entries["fc"]["max_spikes"] == 3
    assert entries["conv2.synapse"]["type"] == "conv" and entries["conv2.synapse"]["num_message_bits"] == 2   # 0..3
    assert entries["fc.synapse"]["num_message_bits"] == 2            # conv2's counts 0..2 (the pool is in the matrix)
    assert entries["fc.recurrent"]["num_message_bits"] == 2          # fc's own counts 0..3
    assert entries["readout.synapse"]["num_message_bits"] == 2


def test_lava_lif_cross_check_refuses_counts():
    net = multispike_dense("hard")
    net.arithmetic = dict(LOIHI1.arithmetic, kind="fixed")   # Lava's LIF registers and fire rule
    with pytest.raises(DesignRuleError, match="layer 'fc1': Lava's LIF sends binary spikes"):
        lava_backend.run_lava_lif(net, images(net))


# --------------------------------------------------------------------------------- mapping

def test_loihi1_refuses_a_multispike_population_naming_it():
    net = multispike_dense("hard")
    with pytest.raises(DesignRuleError) as error:
        mp.map_to_cores(net, LOIHI1)
    assert str(error.value) == ("layer 'fc1': a multi-spike population (up to 3 spikes per step) needs graded "
                                "spikes, and loihi1 sends binary spikes only")


def test_payload_wider_than_the_target_carries_is_refused():
    net = multispike_dense("hard")
    narrow = dataclasses.replace(LOIHI2, limits=dict(LOIHI2.limits, graded_spike_bits=2))
    with pytest.raises(DesignRuleError, match=r"layer 'fc2': a multi-spike population \(up to 4 spikes per step\) needs "
                                              r"3-bit spike payloads, above loihi2's graded_spike_bits of 2"):
        mp.map_to_cores(net, narrow)


def test_targets_say_whether_spikes_are_graded():
    assert LOIHI2.limits["graded_spikes"] is True and LOIHI2.limits["graded_spike_bits"] == 24
    assert LOIHI1.limits["graded_spikes"] is False
    assert load_target(str(WIDE)).limits["graded_spikes"] is True


def test_mapping_rows_give_each_layers_payload_bits():
    net = multispike_conv("hard")
    rows = {layer["name"]: layer for layer in mp.map_to_cores(net, LOIHI2).layers}
    assert {name: row["spike_payload_bits"] for name, row in rows.items()} == \
        {"conv1": 2, "conv2": 2, "fc": 2, "readout": 0}


# ---------------------------------------------------------------------------------- energy

def test_energy_rows_count_one_event_per_nonzero_count():
    """The papers' estimate reads a count as one event: fc2's SOPs are fc1's messages per neuron
    and step x T x FLOPs, not its mean count; the counted ops are the simulator's."""
    net = multispike_dense("soft")
    inputs = images(net)
    trace, counts = cycle.simulate(net, mp.map_to_cores(net, LOIHI2), LOIHI2, inputs)
    activity = energy.Activity(net)
    activity.add(trace, inputs)
    rows = {row["layer"]: row for row in energy._layer_rows(net, activity, cycle.energy_counts(counts),
                                                           LOIHI2.energy_pj, load_energy_table().energy_pj)}
    spikes = stepwise(net, inputs)[0]
    samples = inputs.shape[1]
    sent = np.count_nonzero(spikes["fc1"]) / samples          # messages per sample
    assert rows["fc2"]["sops_estimate"] == pytest.approx(sent * 8)      # 8 outputs per fc1 neuron
    assert rows["fc2"]["sops_estimate"] < spikes["fc1"].sum() / samples * 8
    assert rows["fc1"]["spikes"] == spikes["fc1"].sum() / samples
    assert rows["fc1"]["firing_rate"] == pytest.approx(np.count_nonzero(spikes["fc1"]) / spikes["fc1"].size)
    ops = expected_synaptic_ops(net, inputs, spikes)
    for name in ("fc1", "fc2", "readout"):
        assert rows[name]["synaptic_ops_counted"] == ops[name] / samples


def test_graded_spikes_is_checked_and_absent_means_binary(tmp_path):
    doc = yaml.safe_load(Path(LOIHI2.source_path).read_text())
    del doc["limits"]["graded_spikes"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(doc))
    assert load_target(str(tmp_path / "old.yaml")).limits["graded_spikes"] is False
    doc["limits"]["graded_spikes"] = "yes"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TargetError, match="field 'limits.graded_spikes' must be true or false"):
        load_target(str(tmp_path / "bad.yaml"))
