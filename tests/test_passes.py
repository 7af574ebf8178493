"""Folding and quantization passes, each checked against the network it came from."""
import dataclasses

import numpy as np
import pytest

import netfactory
from snnc import execute, passes
from snnc.errors import DesignRuleError
from snnc.ir import Network, Neuron, Node
from snnc.passes.fold import mpr_inverse
from snnc.targets import load_target

SMALL = {"channels": [16, 32], "hidden": 128}  # the shipped recipes' structure, narrower for speed
SRIF = netfactory.recipe("mnist_srif", arch_params=SMALL)
LIF = netfactory.recipe("mnist_lif", arch_params=SMALL)


def spikes_of(net: Network, images) -> dict:
    return execute.run(net, execute.encode(net, images)).spikes


def assert_same_spikes(a: Network, b: Network, images):
    sa, sb = spikes_of(a, images), spikes_of(b, images)
    assert sa.keys() == sb.keys()
    for name in sa:
        assert np.array_equal(sa[name], sb[name]), f"layer {name}: {(sa[name] != sb[name]).sum()} spikes differ"
    return sa


@pytest.fixture(scope="module")
def images():
    return netfactory.random_images(SRIF, 16, seed=3)


# phi^-1 of InfLoR's MPR at points worked out by hand, one per branch and at the joints:
#   v < 0:      1 - (1 - v)^3        -0.5 -> 1 - 1.5^3 = 1 - 3.375 = -2.375
#   0 <= v <= 1: 1/2 + atanh((v - 1/2) * 2 tanh(3/2)) / 3, with tanh(3/2) = 0.9051482536...
#               0.5 -> 0.5 (the centre);  1 -> 1/2 + atanh(tanh(3/2)) / 3 = 1/2 + 1/2 = 1
#               0.75 -> 1/2 + atanh(0.4525741268...) / 3 = 1/2 + 0.4879327302... / 3 = 0.6626442434...
#   v > 1:      v^3                  1.5 -> 3.375, 2 -> 8
MPR_INVERSE_BY_HAND = [(-0.5, -2.375), (0.0, 0.0), (0.5, 0.5), (0.75, 0.6626442434), (1.0, 1.0),
                       (1.5, 3.375), (2.0, 8.0)]


@pytest.mark.parametrize("v, expected", MPR_INVERSE_BY_HAND)
def test_mpr_inverse_at_hand_computed_points(v, expected):
    from snnc.nn import mpr_inverse as scalar_inverse   # the training side's copy must agree

    assert mpr_inverse(np.array(v)) == pytest.approx(expected, abs=1e-9)
    assert scalar_inverse(v) == pytest.approx(expected, abs=1e-9)


def test_mpr_inverse_inverts_phi():
    from snnc.nn import mpr
    import torch

    v = np.linspace(-3, 3, 2001)
    u = mpr_inverse(v)
    assert np.allclose(mpr(torch.from_numpy(u)).numpy(), v, atol=1e-12)


@pytest.mark.parametrize("vth, folded_threshold", [(0.75, 0.6626442434), (1.5, 3.375)])
def test_fold_mpr_moves_phi_into_the_threshold(images, vth, folded_threshold):
    """phi(H) >= Vth becomes H >= phi^-1(Vth): the hand-computed values above (Vth 0.5 would not
    tell: phi^-1(0.5) = 0.5)."""
    spec = dict(SRIF, neuron=dict(SRIF["neuron"], vth=vth))
    net = netfactory.random_network(spec, seed=1)
    assert np.all(net.node("conv1").neuron.threshold == vth)
    folded = passes.fold_mpr(net)
    assert all(not n.neuron.mpr for n in folded.nodes if n.neuron is not None)
    for node in folded.spiking_nodes():
        assert np.allclose(node.neuron.threshold, folded_threshold, rtol=0, atol=1e-9), node.name
    assert net.node("conv1").neuron.mpr, "the pass must not modify its input"
    assert np.all(net.node("conv1").neuron.threshold == vth), "the pass must not modify its input"
    assert_same_spikes(net, folded, images)


@pytest.mark.parametrize("into", ["neuron", "weights"])
def test_fold_bn_with_negative_scales(images, into):
    net = netfactory.random_network(LIF, seed=2)
    bn = net.node("conv2").bn
    bn.scale[:3] = -np.abs(bn.scale[:3])  # negative tdBN scales flip those channels
    folded = passes.fold_bn(net, into=into)
    assert all(node.bn is None for node in folded.nodes)
    original, result = net.node("conv2"), folded.node("conv2")
    if into == "neuron":
        assert np.array_equal(result.weight[:3], -original.weight[:3])
        per_channel = result.neuron.threshold[:, 0, 0] * np.abs(bn.scale)
        assert np.allclose(per_channel, original.neuron.threshold[:, 0, 0])
    else:
        assert np.array_equal(result.neuron.threshold, original.neuron.threshold)
    assert_same_spikes(net, folded, images)


def test_fold_bn_scales_imp_initial_state(images):
    net = netfactory.random_network(SRIF, seed=4)
    original = net.node("conv1")
    folded = passes.fold_bn(passes.fold_mpr(net)).node("conv1")
    scale = np.abs(original.bn.scale).reshape(-1, 1, 1)
    assert np.any(original.neuron.initial_state != 0), "IMP must reach the IR as the initial state"
    assert np.allclose(folded.neuron.initial_state * scale, original.neuron.initial_state)
    assert np.allclose(folded.neuron.reset_amount * scale, original.neuron.reset_amount)


def test_fold_decay_input_into_synapses(images):
    spec = dict(LIF, neuron=dict(LIF["neuron"], decay_input=True), bn="none")
    net = netfactory.random_network(spec, seed=5)
    assert net.node("conv1").neuron.input_gain == pytest.approx(1 / spec["neuron"]["tau"])
    folded = passes.fold_decay_input(net)
    assert all(n.neuron.input_gain == 1.0 for n in folded.nodes if n.neuron is not None)
    assert np.allclose(folded.node("fc1").weight, net.node("fc1").weight / spec["neuron"]["tau"])
    assert_same_spikes(net, folded, images)


def test_fold_all_leaves_only_adds_compares_and_resets(images):
    net = netfactory.random_network(SRIF, seed=6)
    folded = passes.fold_all(net)
    for node in folded.nodes:
        assert node.bn is None and node.bias is None
        if node.neuron is not None:
            assert not node.neuron.mpr and node.neuron.input_gain == 1.0
    assert_same_spikes(net, folded, images)
    readout_a = execute.run(net, execute.encode(net, images)).readout
    readout_b = execute.run(folded, execute.encode(folded, images)).readout
    assert np.allclose(readout_a, readout_b)


def test_folding_a_residual_network():
    spec = netfactory.recipe("sew_resnet18", input_shape=[3, 16, 16])
    spec["arch_params"] = dict(spec["arch_params"], channels=[4, 8, 8, 8])
    net = netfactory.random_network(spec, seed=7)
    assert_same_spikes(net, passes.fold_all(net), netfactory.random_images(spec, 4))


@pytest.fixture(scope="module")
def quantized():
    folded = passes.fold_all(netfactory.random_network(SRIF, seed=8))
    return folded, passes.quantize(folded, load_target("loihi2"))


def test_quantized_parameters_fit_the_target(quantized):
    _, fixed = quantized
    arithmetic = fixed.arithmetic
    w_limit = 2 ** (arithmetic["weight_bits"] - 1) - 1
    for node in fixed.nodes:
        if node.weight is not None:
            assert node.weight.dtype == np.int64 and np.abs(node.weight).max() <= w_limit
            assert np.abs(node.weight).max() >= w_limit // 2, f"{node.name} wastes its weight range"
        if node.neuron is not None:
            bias = node.neuron.bias
            exponent = np.zeros_like(bias)
            odd = bias != 0
            while np.any(odd & (bias % (2 ** (exponent + 1)) == 0) & (np.abs(bias) >> exponent > 4095)):
                exponent = np.where(odd & (np.abs(bias) >> exponent > 4095), exponent + 1, exponent)
            assert np.all(np.abs(bias) >> exponent <= 4095) and np.all(exponent <= 7)
            if node.spiking:
                assert node.neuron.threshold.dtype == np.int64
                assert node.neuron.threshold.max() < 2 ** 23


def test_quantized_network_tracks_the_float_one(quantized):
    folded, fixed = quantized
    images = netfactory.random_images(SRIF, 32, seed=9)
    float_trace = execute.run(folded, execute.encode(folded, images))
    fixed_trace = execute.run(fixed, execute.encode(fixed, images))
    for name, spikes in fixed_trace.spikes.items():
        assert (spikes == float_trace.spikes[name]).mean() > 0.85, name


def test_fire_rule_conversion_is_exact(quantized):
    folded, fixed = quantized
    strict_target = dataclasses.replace(load_target("loihi2"),
                                        arithmetic=dict(load_target("loihi2").arithmetic, fire_rule=">"))
    strict = passes.quantize(folded, strict_target)
    assert np.array_equal(strict.node("conv1").neuron.threshold, fixed.node("conv1").neuron.threshold - 1)
    images = netfactory.random_images(SRIF, 8, seed=10)
    a = execute.run(fixed, execute.encode(fixed, images))
    b = execute.run(strict, execute.encode(strict, images))
    assert all(np.array_equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert np.array_equal(a.readout, b.readout)


def test_soft_reset_is_refused_where_the_target_lacks_it():
    folded = passes.fold_all(netfactory.random_network(SRIF, seed=11))
    with pytest.raises(DesignRuleError, match="layer 'conv1': soft reset is not supported"):
        passes.quantize(folded, load_target("loihi1"))


def test_bound_analysis_is_sound_and_flags_overflow(quantized):
    _, fixed = quantized
    report = {entry["layer"]: entry for entry in passes.bound_analysis(fixed)}
    images = np.full((4,) + tuple(SRIF["input_shape"]), 255, dtype=np.uint8)
    images[1] = 0
    images[2, :, ::2] = 0
    trace = execute.run(fixed, execute.encode(fixed, images), record_voltages=tuple(report))
    for name, volts in trace.voltages.items():
        assert np.abs(volts).max() <= report[name]["max_abs_voltage"], name
    quiet = fixed.copy()
    quiet.node("fc1").weight = np.sign(quiet.node("fc1").weight)  # at most 1568 << 6 per step
    assert not {e["layer"]: e for e in passes.bound_analysis(quiet)}["fc1"]["voltage_overflow"]
    quiet.node("fc1").neuron.bias = quiet.node("fc1").neuron.bias - 2 ** 22  # two steps pass -2^23
    assert {e["layer"]: e for e in passes.bound_analysis(quiet)}["fc1"]["voltage_overflow"]


def _two_neuron_network(T: int) -> Network:
    """input (2 pixels, up to 255) -> fc (2 IF neurons, hard reset at 1000, weights 10) -> readout."""
    def neuron(n, kind):
        spiking = kind == "spiking"
        return Neuron(kind=kind, threshold=np.full((n,), 1000, np.int64) if spiking else None,
                      reset="hard" if spiking else "none", reset_amount=None, bias=np.zeros((n,), np.int64),
                      initial_state=np.zeros((n,), np.int64), v_decay=0, u_decay=4095)
    return Network(name="tiny", T=T, readout="mean", nodes=[
        Node("input", "input", [], (2,)),
        Node("fc", "linear", ["input"], (2,), weight=np.array([[10, 0], [0, 10]]), neuron=neuron(2, "spiking")),
        Node("readout", "linear", ["fc"], (1,), weight=np.array([[1, 1]]), neuron=neuron(1, "integrator")),
    ], arithmetic=dict(load_target("loihi2").arithmetic, kind="fixed"), encoding={"scale": 1 / 255, "max": 255})


def test_bound_analysis_of_a_billion_steps_is_immediate_and_exact_by_hand():
    report = {e["layer"]: e for e in passes.bound_analysis(_two_neuron_network(10 ** 9))}
    # fc: u = 10 * 255 << 6 = 163200 every step; v at most threshold + u = 164200 (reset to <= 1000)
    assert (report["fc"]["max_abs_current"], report["fc"]["max_abs_voltage"]) == (163200, 164200)
    assert not report["fc"]["current_overflow"] and not report["fc"]["voltage_overflow"]
    # readout: u = 2 << 6 = 128 per step, integrated without leak over 10^9 steps
    assert (report["readout"]["max_abs_current"], report["readout"]["max_abs_voltage"]) == (128, 128 * 10 ** 9)
    assert report["readout"]["voltage_overflow"] and not report["readout"]["current_overflow"]


@pytest.mark.parametrize("spec", [SRIF, LIF], ids=["srif", "lif"])
def test_bound_analysis_in_closed_form_bounds_the_step_by_step_one(spec):
    fixed = passes.quantize(passes.fold_all(netfactory.random_network(spec, seed=12)), load_target("loihi2"))
    fixed.T = 3000
    leaky = fixed.copy()      # currents with memory and a slow leak: the closed form's slowest case
    for node in leaky.nodes:
        if node.neuron is not None:
            node.neuron.u_decay, node.neuron.v_decay = 20, 7
    for net in (fixed, leaky):
        stepwise = passes.bound_analysis(net, exact_steps=net.T)
        closed = passes.bound_analysis(net, exact_steps=10)
        for exact, bound in zip(stepwise, closed):
            for key in ("max_abs_current", "max_abs_voltage"):
                assert exact[key] <= bound[key] <= 1.02 * exact[key] + 1, (exact, bound)


def test_sumpool_sums_and_avgpool_averages():
    import torch

    from snnc.ir import Node

    ones = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    for op, expected in (("sumpool", 4.0), ("avgpool", 1.0)):
        node = Node(name="p", op=op, inputs=["x"], shape=(2, 2, 2), attrs={"kernel": 2, "stride": 2})
        assert torch.all(execute.synaptic_op(node, [ones], with_bias=False) == expected)
