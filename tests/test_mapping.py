"""Core mapping: partitions under per-core limits, exact fan-in/synapse/memory counts, placement."""
import dataclasses
import json
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netfactory
from snnc.compiler import compile_network
from snnc.errors import DesignRuleError
from snnc.ir import Network, Neuron, Node
from snnc.passes import mapping as mp
from snnc.targets import load_target

LOIHI2 = load_target("loihi2")


def small_target(**limits):
    base = dict(LOIHI2.limits)
    base.update(limits)
    return dataclasses.replace(LOIHI2, limits=base)


def neuron(shape, kind="spiking", threshold=1000, bias=0):
    spiking = kind == "spiking"
    return Neuron(kind=kind, threshold=np.full(shape, threshold, np.int64) if spiking else None,
                  reset="hard" if spiking else "none", reset_amount=None,
                  bias=np.full(shape, bias, np.int64), initial_state=np.zeros(shape, np.int64),
                  v_decay=0, u_decay=4095)


def fixed_net(nodes, T=3, readout="mean", target=LOIHI2):
    return Network(name="handmade", T=T, readout=readout, nodes=nodes,
                   arithmetic=dict(target.arithmetic, kind="fixed"),
                   encoding={"scale": 1 / 255, "max": 255}, metadata={"target": target.name})


def mlp(fan_in=16, hidden=8, classes=2):
    """input (1, 4, 4) -> flatten -> fc (hidden) -> readout (classes)."""
    rng = np.random.default_rng(0)
    return fixed_net([
        Node("input", "input", [], (1, 4, 4)),
        Node("flatten", "flatten", ["input"], (fan_in,)),
        Node("fc", "linear", ["flatten"], (hidden,), weight=rng.integers(-9, 9, (hidden, fan_in)),
             neuron=neuron((hidden,))),
        Node("readout", "linear", ["fc"], (classes,), weight=rng.integers(-9, 9, (classes, hidden)),
             neuron=neuron((classes,), kind="integrator")),
    ])


def conv_net(cin=2, size=8, cout=3):
    rng = np.random.default_rng(1)
    return fixed_net([
        Node("input", "input", [], (cin, size, size)),
        Node("conv", "conv2d", ["input"], (cout, size, size),
             attrs={"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]},
             weight=rng.integers(-9, 9, (cout, cin, 3, 3)), neuron=neuron((cout, size, size))),
        Node("flatten", "flatten", ["conv"], (cout * size * size,)),
        Node("readout", "linear", ["flatten"], (2,), weight=rng.integers(-9, 9, (2, cout * size * size)),
             neuron=neuron((2,), kind="integrator")),
    ])


def cores_of(mapping, layer):
    return [core for core in mapping.cores if core["layer"] == layer]


# ------------------------------------------------------------------------------ limits

def test_neurons_per_core_exactly_at_the_limit_and_one_over():
    net = mlp(hidden=8)
    at = mp.map_to_cores(net, small_target(neurons_per_core=8))
    assert at.layer("fc")["cores"] == 1 and cores_of(at, "fc")[0]["neurons"] == 8
    over = mp.map_to_cores(net, small_target(neurons_per_core=7))
    assert over.layer("fc")["cores"] == 2
    assert sorted(core["neurons"] for core in cores_of(over, "fc")) == [1, 7]
    assert all(core["neurons"] <= 7 for core in over.cores)


def test_fan_in_exactly_at_the_limit_and_one_over():
    net = mlp(fan_in=16)
    at = mp.map_to_cores(net, small_target(fan_in_axons_per_core=16))
    assert at.layer("fc")["max_fan_in"] == 16
    with pytest.raises(DesignRuleError, match=r"layer 'fc': fan-in 16 axons exceeds the target's 15 per core"):
        mp.map_to_cores(net, small_target(fan_in_axons_per_core=15))


def test_synaptic_memory_packing_by_hand():
    # 64 neurons per core -> 6 index bits + 8 weight bits = 14 bits per synapse. An fc core with
    # g neurons holds one list of g synapses per axon (16 axons): ceil(14 g / 64) words each.
    net = mlp(fan_in=16, hidden=8)
    target = small_target(neurons_per_core=64, synaptic_memory_bits_per_core=1024)
    mapping = mp.map_to_cores(net, target)
    assert mapping.packing["bits_per_synapse"] == 14
    fc = cores_of(mapping, "fc")
    # g = 4: ceil(56/64) = 1 word per axon = 16 * 64 = 1024 bits; g = 5 would need 2 words.
    assert [core["neurons"] for core in fc] == [4, 4]
    assert [core["memory_bits"] for core in fc] == [1024, 1024]
    assert [core["synapses"] for core in fc] == [64, 64]
    with pytest.raises(DesignRuleError, match=r"layer 'fc': a single neuron needs 1024 bits of synaptic "
                                              r"memory, above the target's 1023 per core"):
        mp.map_to_cores(net, small_target(neurons_per_core=64, synaptic_memory_bits_per_core=1023))


def test_total_cores_limit_at_and_over():
    net = mlp(hidden=8, classes=2)              # fc 8 neurons + readout 2 at one neuron per core
    assert mp.map_to_cores(net, small_target(neurons_per_core=1, cores=10)).totals["cores_used"] == 10
    with pytest.raises(DesignRuleError, match=r"needs 10 cores, the target has 9"):
        mp.map_to_cores(net, small_target(neurons_per_core=1, cores=9))


def test_fan_out_limit_is_respected():
    # fc (8 neurons) -> readout (2 neurons), each readout neuron on its own core: every fc axon
    # reaches 2 cores. An fc core with g neurons therefore has 2 g output axons.
    net = mlp(hidden=8, classes=2)
    free = mp.map_to_cores(net, small_target(neurons_per_core=64, synaptic_memory_bits_per_core=1024))
    assert max(core["fan_out"] for core in cores_of(free, "fc")) == 4     # memory allows 4 per core
    mapping = mp.map_to_cores(net, small_target(neurons_per_core=64, synaptic_memory_bits_per_core=1024,
                                                fan_out_per_core=3))
    per_axon = len(cores_of(mapping, "readout"))
    assert sorted(core["neurons"] for core in cores_of(mapping, "fc")) == [2, 3, 3]
    for core in cores_of(mapping, "fc"):
        assert core["fan_out"] == core["neurons"] * per_axon <= 3
    with pytest.raises(DesignRuleError, match=r"fan-out"):
        mp.map_to_cores(net, small_target(neurons_per_core=1, fan_out_per_core=1))


# ------------------------------------------------------------------------ exact counts

def test_conv_fan_in_at_border_and_center():
    net = conv_net(cin=2, size=6, cout=3)
    one = mp.map_to_cores(net, LOIHI2, partitions={"conv": mp.Partition(1, (1, 1))})
    by_position = {(c["rows"][0], c["cols"][0], c["channels"][0]): c for c in cores_of(one, "conv")}
    assert by_position[(0, 0, 0)]["fan_in"] == 2 * 4        # corner: 2x2 of the 3x3 window inside
    assert by_position[(0, 3, 1)]["fan_in"] == 2 * 6        # edge: 2x3
    assert by_position[(4, 4, 2)]["fan_in"] == 2 * 9        # centre: the whole window
    assert by_position[(0, 0, 0)]["synapses"] == 2 * 4 and by_position[(4, 4, 2)]["synapses"] == 2 * 9
    tiled = mp.map_to_cores(net, LOIHI2, partitions={"conv": mp.Partition(3, (2, 2))})
    corner = next(c for c in cores_of(tiled, "conv") if c["rows"] == [0, 2] and c["cols"] == [0, 2])
    centre = next(c for c in cores_of(tiled, "conv") if c["rows"] == [2, 4] and c["cols"] == [2, 4])
    assert corner["fan_in"] == 2 * 3 * 3 and centre["fan_in"] == 2 * 4 * 4
    # synapses of the corner tile: taps inside the input for its 4 positions, x 2 in x 3 out channels
    assert corner["synapses"] == 3 * 2 * (4 + 6 + 6 + 9)
    assert sum(c["synapses"] for c in cores_of(tiled, "conv")) == tiled.layer("conv")["synapses"]


def _structural_conv_synapses(cin, cout, size, kernel, padding):
    ones = torch.ones((1, cin, size, size), dtype=torch.float64)
    return int(F.conv2d(ones, torch.ones((cout, cin, kernel, kernel), dtype=torch.float64),
                        padding=padding).sum())


@pytest.mark.parametrize("recipe,target", [("mnist_srif", "loihi2"), ("mnist_lif", "loihi1")])
def test_shipped_mnist_recipes_map_with_exact_synapse_counts(recipe, target):
    target = load_target(target)
    spec = netfactory.recipe(recipe)
    (c1, c2), hidden = spec["arch_params"]["channels"], spec["arch_params"]["hidden"]
    net = compile_network(netfactory.random_network(spec), target).fixed
    mapping = mp.map_to_cores(net, target)
    assert mapping.layer("conv1")["synapses"] == _structural_conv_synapses(1, c1, 28, 3, 1)
    assert mapping.layer("conv2")["synapses"] == _structural_conv_synapses(c1, c2, 14, 3, 1)
    assert mapping.layer("fc1")["synapses"] == c2 * 7 * 7 * hidden
    assert mapping.layer("readout")["synapses"] == hidden * 10
    assert mapping.totals["neurons"] == c1 * 28 * 28 + c2 * 14 * 14 + hidden + 10
    for layer, extent in (("conv1", 28), ("conv2", 14)):   # tiles aligned to the 2x2 pooling that follows
        th, tw = mapping.layer(layer)["partition"]["tile"]
        assert th % 2 == 0 or th == extent
        assert tw % 2 == 0 or tw == extent
    assert mapping.layer("fc1")["max_fan_in"] == c2 * 7 * 7      # one axon per pooled value
    limits = target.limits
    for core in mapping.cores:
        assert core["neurons"] <= limits["neurons_per_core"]
        assert core["fan_in"] <= limits["fan_in_axons_per_core"]
        assert core["memory_bits"] <= limits["synaptic_memory_bits_per_core"]
        assert core["fan_out"] <= limits["fan_out_per_core"]
    assert mapping.totals["cores_used"] == len(mapping.cores) <= limits["cores"]
    assert mp.format_mapping(mapping).count("\n") >= 6


def test_pooling_block_split_over_cores_gives_one_axon_per_sender():
    # A global 4x4 pool after a conv whose aligned tiling (the whole 4x4 map per core) breaks the
    # fan-in limit: the conv is tiled anyway and each tile sends its partial count.
    rng = np.random.default_rng(2)
    net = fixed_net([
        Node("input", "input", [], (4, 4, 4)),
        Node("conv", "conv2d", ["input"], (2, 4, 4), attrs={"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]},
             weight=rng.integers(-9, 9, (2, 4, 3, 3)), neuron=neuron((2, 4, 4))),
        Node("pool", "sumpool", ["conv"], (2, 1, 1), attrs={"kernel": 4, "stride": 4}),
        Node("flatten", "flatten", ["pool"], (2,)),
        Node("readout", "linear", ["flatten"], (3,), weight=rng.integers(-9, 9, (3, 2)),
             neuron=neuron((3,), kind="integrator")),
    ])
    mapping = mp.map_to_cores(net, small_target(fan_in_axons_per_core=4 * 9))   # a 4x4 tile needs 64
    conv = mapping.layer("conv")
    th, tw = conv["partition"]["tile"]
    senders_per_block = (-(-4 // th)) * (-(-4 // tw))
    assert senders_per_block > 1
    assert mapping.layer("readout")["max_fan_in"] == 2 * senders_per_block


# ------------------------------------------------------------------------- placement

def test_serpentine_placement_and_xy_hops():
    order = mp.core_positions((4, 4), (2, 2))
    assert order[:8] == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    assert order[8:] == [(2, 2), (2, 3), (3, 2), (3, 3), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert mp.hops((0, 0), (1, 1), (2, 2)) == (0, 0)          # same tile
    assert mp.hops((0, 0), (3, 3), (2, 2)) == (1, 1)
    assert mp.hops((0, 1), (2, 7), (2, 2)) == (3, 1)
    assert mp.hops((5, 0), (0, 0), (1, 1)) == (0, 5)
    net = mlp(hidden=8, classes=2)
    mapping = mp.map_to_cores(net, small_target(neurons_per_core=4, mesh=[4, 4], tile=[2, 2]))
    assert [tuple(c["position"]) for c in mapping.cores] == order[:len(mapping.cores)]
    assert mapping.totals["tiles_used"] == 1 and mapping.cores[-1]["tile"] == [0, 0]


@pytest.fixture(scope="module")
def lif_mapping_json(tmp_path_factory):
    """mapping.json as the export writes it, for a network of the shipped LIF recipe on loihi2."""
    net = compile_network(netfactory.random_network(netfactory.recipe("mnist_lif")), LOIHI2).fixed
    directory = tmp_path_factory.mktemp("mapping")
    assert mp.write_artifacts(types.SimpleNamespace(fixed=net, target=LOIHI2), directory, {}) == ["mapping.json"]
    return net, directory / "mapping.json"


def test_mapping_json_places_every_neuron_once(lif_mapping_json):
    """The file accounts for the network it maps: models/mnist_lif.yaml has channels [32, 64] and
    128 hidden neurons on 28x28 inputs, so conv1 holds 32*28*28 = 25088 neurons, conv2 (after the
    2x2 pool) 64*14*14 = 12544, fc1 128 and the readout 10: 37770 in all, each on exactly one core."""
    _, path = lif_mapping_json
    doc = json.loads(path.read_text())
    assert doc["format"] == "snnc-mapping" and doc["target"] == "loihi2"
    expected = {"conv1": 25088, "conv2": 12544, "fc1": 128, "readout": 10}
    assert [entry["name"] for entry in doc["layers"]] == ["conv1", "conv2", "fc1", "readout"]
    for name, neurons in expected.items():
        shape = next(entry["shape"] for entry in doc["layers"] if entry["name"] == name)
        covered = np.zeros((list(shape) + [1, 1])[:3], np.int64)     # (C,) as (C, 1, 1)
        cores = [core for core in doc["cores"] if core["layer"] == name]
        for core in cores:
            (c0, c1), (y0, y1), (x0, x1) = core["channels"], core["rows"], core["cols"]
            covered[c0:c1, y0:y1, x0:x1] += 1
        assert covered.size == neurons and np.all(covered == 1), f"{name}: a neuron on no core or on two"
        assert sum(core["neurons"] for core in cores) == neurons, name
    assert doc["totals"]["neurons"] == 37770
    assert [core["id"] for core in doc["cores"]] == list(range(doc["totals"]["cores_used"]))
    positions = [tuple(core["position"]) for core in doc["cores"]]
    assert len(set(positions)) == len(positions)
    rows, cols = LOIHI2.limits["mesh"]                  # 8 x 16 in targets/loihi2.yaml
    assert all(0 <= r < rows and 0 <= c < cols for r, c in positions)
    assert str(path.parent) not in path.read_text()


def test_mapping_json_reads_back_as_the_same_mapping(lif_mapping_json):
    """inspect, simulate, energy and the cycle simulator read mapping.json instead of recomputing
    it: what they read must be the mapping that was written."""
    net, path = lif_mapping_json
    assert mp.Mapping.from_dict(json.loads(path.read_text())) == mp.map_to_cores(net, LOIHI2)


def test_shared_conv_weights_hold_the_kernels_once():
    """loihi2's `conv_weights: shared`: a core holding 3 output channels of a 2 -> 3 channel 3x3 conv
    over 8 x 8 stores its kernels once (3 x 18 weights x 8 bits = 432 bits: 7 words) and 64 bits for
    each of its 2 x 64 input axons; per connection it would hold every synapse of every axon."""
    net = conv_net()
    whole = {"conv": mp.Partition(3, (8, 8))}
    assert LOIHI2.limits["conv_weights"] == "shared" and LOIHI2.limits["conv_axon_bits"] == 64
    shared = mp.map_to_cores(net, LOIHI2, partitions=whole)
    assert shared.layer("conv")["memory_bits"] == 7 * 64 + 2 * 64 * 64
    assert "conv_rule" in shared.packing
    per_connection = small_target(conv_weights="per_connection")
    windows = np.array([2] + [3] * 6 + [2])
    synapses = 3 * windows[:, None] * windows[None, :]    # per input position: channels x windows holding it
    bits = shared.packing["bits_per_synapse"]
    assert mp.map_to_cores(net, per_connection, partitions=whole).layer("conv")["memory_bits"] == \
        2 * 64 * int((-(-(synapses * bits) // 64)).sum())
    # the design rules count what the core stores: a memory that holds the shared layer on one core
    memory = 192 * 64             # (what one readout neuron needs: a word for each of its 192 axons)
    assert mp.map_to_cores(net, small_target(synaptic_memory_bits_per_core=memory)).layer("conv")["cores"] == 1
    assert mp.map_to_cores(net, small_target(synaptic_memory_bits_per_core=memory,
                                             conv_weights="per_connection")).layer("conv")["cores"] > 1
