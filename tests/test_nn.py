"""Neuron, MPR, tdBN and readout rules of docs/semantics.md, sections 1 and 5."""
import pytest
import torch

from snnc.nn import Readout, SpikingNeuron, TdBN, mpr, mpr_inverse

VTH = 0.5
INFLOR_INPUTS = [1.5, 1.2, 1.5, 0.9, 1.4]  # x Vth, InfLoR Fig. 2


def run_neuron(neuron, currents):
    """Feed one neuron a scalar current per step; returns its spikes as a list."""
    x = torch.tensor(currents, dtype=torch.float64).reshape(-1, 1, 1)
    return neuron(x).flatten().tolist()


def test_inflor_worked_example_srif_fires_three_hard_if_fires_four():
    currents = [c * VTH for c in INFLOR_INPUTS]
    srif = SpikingNeuron(kind="if", vth=VTH, reset="soft", reset_amount=1.0)
    hard_if = SpikingNeuron(kind="if", vth=VTH, reset="hard")
    assert run_neuron(srif, currents) == [1, 0, 1, 1, 0]
    assert run_neuron(hard_if, currents) == [1, 1, 1, 0, 1]


def test_fires_at_exactly_threshold():
    assert run_neuron(SpikingNeuron(kind="if", vth=VTH), [VTH]) == [1]
    assert run_neuron(SpikingNeuron(kind="if", vth=VTH), [VTH - 1e-9]) == [0]


def test_lif_charge_with_and_without_input_decay():
    # tau 4: beta = 0.75. Without decay_input: H = 0.3, then 0.75*0.3 + 0.3 = 0.525 >= 0.5.
    plain = SpikingNeuron(kind="lif", vth=VTH, tau=4.0, reset="hard")
    assert run_neuron(plain, [0.3, 0.3]) == [0, 1]
    # With decay_input: H = 1.2/4 = 0.3, then 0.225 + 0.3 = 0.525.
    decayed = SpikingNeuron(kind="lif", vth=VTH, tau=4.0, decay_input=True, reset="hard")
    assert run_neuron(decayed, [1.2, 1.2]) == [0, 1]
    assert run_neuron(decayed, [0.3, 0.3]) == [0, 0]


def test_soft_reset_subtracts_reset_amount():
    # s = Vth (SpikingJelly style): 0.8 -> fire, U = 0.3; 0.3 + 0.3 = 0.6 -> fire again.
    neuron = SpikingNeuron(kind="if", vth=VTH, reset="soft", reset_amount=VTH)
    assert run_neuron(neuron, [0.8, 0.3]) == [1, 1]
    srif = SpikingNeuron(kind="if", vth=VTH, reset="soft", reset_amount=1.0)
    assert run_neuron(srif, [0.8, 0.3]) == [1, 0]


def test_mpr_only_changes_the_spike_decision():
    # H = 0.45: phi(0.45) ~ 0.42 < 0.5, no spike. U keeps H, so 0.45 + 0.06 = 0.51 fires;
    # had U kept phi(H), 0.42 + 0.06 would stay below threshold.
    neuron = SpikingNeuron(kind="if", vth=VTH, reset="soft", mpr=True)
    assert mpr(torch.tensor(0.45)).item() + 0.06 < VTH   # and phi(0.48) < 0.5 as phi^-1(0.5) = 0.5
    assert run_neuron(neuron, [0.45, 0.06]) == [0, 1]


def test_neuron_attributes_are_plain_python_values():
    neuron = SpikingNeuron(kind="lif", vth=0.5, tau=2.0, reset="soft", reset_amount=1.0, mpr=True)
    for name, kind in [("kind", str), ("vth", float), ("tau", float), ("decay_input", bool),
                       ("reset", str), ("reset_amount", float), ("mpr", bool)]:
        assert type(getattr(neuron, name)) is kind, name
    assert neuron.imp is None
    assert "imp" not in dict(neuron.named_parameters())


@pytest.mark.parametrize("u, expected", [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0),
                                         (8.0, 2.0), (-7.0, -1.0)])
def test_mpr_fixed_points(u, expected):
    assert mpr(torch.tensor(u, dtype=torch.float64)).item() == pytest.approx(expected, abs=1e-12)


def test_mpr_continuous_at_branch_points_and_strictly_increasing():
    for point in (0.0, 1.0):
        left = mpr(torch.tensor(point - 1e-9, dtype=torch.float64)).item()
        right = mpr(torch.tensor(point + 1e-9, dtype=torch.float64)).item()
        assert abs(left - right) < 1e-8
    u = torch.linspace(-5.0, 5.0, 100001, dtype=torch.float64)
    assert (mpr(u).diff() > 0).all()


def test_mpr_gradient_is_finite_everywhere():
    u = torch.linspace(-4.0, 4.0, 801, requires_grad=True)
    mpr(u).sum().backward()
    assert torch.isfinite(u.grad).all()
    assert (u.grad > 0).all()


def test_mpr_inverse_inverts():
    for v in (-0.9, -0.1, 0.0, 0.2, 0.5, 0.77, 1.0, 1.3, 3.0):
        u = torch.tensor(mpr_inverse(v), dtype=torch.float64)
        assert mpr(u).item() == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize("vth", [0.1, 0.3, 0.5, 0.75, 1.0, 1.5])
def test_mpr_folds_into_threshold(vth):
    h = torch.linspace(-3.0, 6.0, 200001, dtype=torch.float64)
    folded = mpr_inverse(vth)
    ambiguous = (h - folded).abs() < 1e-12  # float rounding right at the boundary
    fires = mpr(h) >= vth
    assert torch.equal(fires[~ambiguous], (h >= folded)[~ambiguous])


def test_mpr_neuron_learns_from_negative_potentials():
    """The NaN trap: a cube root on negative potentials must not poison the gradient."""
    neuron = SpikingNeuron(kind="if", vth=VTH, reset="soft", mpr=True)
    x = torch.full((3, 2, 4), -2.0, requires_grad=True)
    neuron(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_imp_is_initial_state_and_receives_gradient():
    neuron = SpikingNeuron(kind="if", vth=VTH, reset="soft", mpr=True, imp_shape=(3,))
    assert torch.equal(neuron.imp.detach(), torch.zeros(3))
    with torch.no_grad():
        neuron.imp.copy_(torch.tensor([0.0, 0.25, 0.5]))
    x = torch.full((2, 5, 3), 0.3, requires_grad=True)  # T=2, B=5 shares one IMP
    spikes = neuron(x)
    assert spikes[0, 0].tolist() == [0.0, 1.0, 1.0]  # 0.3, 0.55, 0.8 at t=1
    spikes.sum().backward()
    assert neuron.imp.grad is not None and neuron.imp.grad.abs().sum() > 0


def test_tdbn_normalises_over_time_batch_and_space():
    torch.manual_seed(0)
    alpha = 1.5
    bn = TdBN(4, vth=VTH, alpha=alpha)
    bn.momentum = 1.0  # running stats = this batch's stats
    # Each time step has its own offset: per-step normalisation would remove it, tdBN must not.
    x = torch.randn(3, 5, 4, 6, 6) * 2.0 + torch.arange(3.0).reshape(3, 1, 1, 1, 1) * 4.0
    y = bn(x)
    per_channel = y.transpose(0, 2).reshape(4, -1)
    assert torch.allclose(per_channel.mean(dim=1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(per_channel.std(dim=1, unbiased=False), torch.full((4,), alpha * VTH),
                          rtol=1e-3)
    assert y[2].mean() - y[0].mean() > 1.0  # the time offset survived
    pooled = x.transpose(0, 2).reshape(4, -1)  # over T*B*H*W
    assert torch.allclose(bn.running_mean, pooled.mean(dim=1), atol=1e-5)
    assert torch.allclose(bn.running_var, pooled.var(dim=1, unbiased=True), rtol=1e-4)


def test_tdbn_is_a_foldable_batchnorm():
    bn = TdBN(3, vth=VTH, kind="1d")
    assert isinstance(bn, torch.nn.modules.batchnorm._BatchNorm)
    assert torch.equal(bn.weight.detach(), torch.full((3,), VTH))
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.05, 0.0, -0.1]))
    bn.eval()
    x = torch.randn(2, 4, 3)
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bn.bias - bn.running_mean * a
    assert torch.allclose(bn(x), a * x + b, atol=1e-6)


def test_readout_integrates_without_threshold():
    x = torch.tensor([[[1.0, -2.0]], [[0.5, 0.5]], [[2.0, 0.0]]])  # T=3, B=1, 2 classes
    y = Readout("mean")(x)
    assert y[:, 0].tolist() == [[1.0, -2.0], [1.5, -1.5], [3.5, -1.5]]
    assert Readout("mean").reduce(y)[0].tolist() == pytest.approx([6.0 / 3, -5.0 / 3])
    assert Readout("last").reduce(y)[0].tolist() == [3.5, -1.5]


def test_invalid_neuron_settings_are_rejected():
    with pytest.raises(ValueError):
        SpikingNeuron(kind="izhikevich")
    with pytest.raises(ValueError):
        SpikingNeuron(reset="sideways")
    with pytest.raises(ValueError):
        SpikingNeuron(kind="lif", tau=1.0)
