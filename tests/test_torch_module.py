"""The torch module frontend (snnc.frontends.torch_module) against SpikingJelly's and snnTorch's own
forward passes: networks built from their layers and neurons (tests/torch_nets.py) become float
Networks whose execution reproduces every neuron layer's spikes, spike for spike in float64, on
real digits, and the readout; then the export pipeline takes them (`snnc export --model
FILE.py:FACTORY --weights`)."""
import json
import textwrap

import numpy as np
import pytest
import torch_nets
import torch
from clicheck import invoke

from snnc import execute
from snnc.errors import InputError
from snnc.frontends.torch_module import load_module, network_from_module


def test_conv_bn_if_lif_plif_network_spike_for_spike():
    net = torch_nets.compare(torch_nets.conv_net())
    kinds = [(node.op, node.bn is not None, node.neuron.reset if node.neuron else None) for node in net.nodes]
    assert kinds == [("input", False, None), ("conv2d", True, "hard"), ("avgpool", False, None),
                     ("flatten", False, None), ("linear", False, "soft"), ("linear", False, "hard"),
                     ("linear", False, "none")]


def test_single_step_mode_is_the_same_network():
    multi, single = torch_nets.conv_net("m"), torch_nets.conv_net("s")
    torch_nets.compare(single, step_mode="s")
    a = network_from_module(multi, (1, 28, 28), torch_nets.T)
    b = network_from_module(single, (1, 28, 28), torch_nets.T)
    assert [(n.name, n.op, n.shape) for n in a.nodes] == [(n.name, n.op, n.shape) for n in b.nodes]


def test_sew_residual_add_and_seq_to_ann_containers():
    net = torch_nets.compare(torch_nets.sew_net())
    add = next(node for node in net.nodes if node.op == "add")
    assert add.neuron is None and len(add.inputs) == 2   # SEW ADD: spikes + spikes


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_snntorch_leaky_and_synaptic_spike_for_spike(reset):
    net = torch_nets.compare(torch_nets.snntorch_net(reset), simulate=torch_nets.run_snntorch)
    resets = [node.neuron.reset for node in net.nodes if node.spiking]
    assert resets == [{"subtract": "soft", "zero": "hard", "none": "none"}[reset]] * 2
    if reset != "zero":   # Synaptic: a current with memory
        assert net.nodes[-2].neuron.u_decay == pytest.approx(0.4)


def test_snntorch_what_snnc_cannot_hold_is_refused():
    import snntorch

    for neuron, message in ((snntorch.Synaptic(alpha=0.5, beta=0.5, init_hidden=True, reset_mechanism="zero"),
                             "Synaptic with reset_mechanism 'zero'"),
                            (snntorch.Leaky(beta=0.5), "without init_hidden=True"),
                            (snntorch.Leaky(beta=0.0, init_hidden=True), "beta = 0"),
                            (snntorch.Leaky(beta=torch.tensor([0.5, 0.6]), init_hidden=True), "a beta per neuron")):
        model = torch.nn.Sequential(torch.nn.Linear(4, 2), neuron, torch.nn.Linear(2, 2))
        with pytest.raises(InputError, match=f"module '1': .*{message}"):
            network_from_module(model, (4,), 4)


def test_snnc_modules_with_imp_mpr_tdbn_and_readout():
    """snnc.nn's neurons (MPR, soft reset, a learned IMP) and readout inside a user's module."""
    net = torch_nets.compare(torch_nets.snnc_nn_net(), simulate=torch_nets.run_snnc_nn, reduce=lambda y: y.mean(axis=0))
    first = net.nodes[1].neuron
    assert first.mpr and first.reset == "soft" and np.any(first.initial_state) and net.readout == "mean"


def test_spikingjelly_model_zoo_sew_resnet18_spike_for_spike():
    """SpikingJelly's own SEW-ResNet-18 builder (ADD connections, IF neurons, its stem's padded max
    pool, downsample neurons, adaptive average pool) on digits padded to 3 x 32 x 32."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import sew_resnet

    torch.manual_seed(0)
    model = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.IFNode, num_classes=10)
    functional.set_step_mode(model, "m")
    model = torch_nets._scaled(model, seed=7, gain=2.0)
    pixels = np.repeat(np.pad(torch_nets.digits()[:4], ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    theirs, outputs = torch_nets.run(model, pixels, shape=(3, 32, 32), steps=4)
    net = network_from_module(model, (3, 32, 32), 4)
    trace = execute.run(net, execute.encode(net, pixels))
    assert len(net.metadata["torch"]["neurons"]) == len(theirs) == 20
    assert sum(node.op == "add" for node in net.nodes) == 8
    for path, node in net.metadata["torch"]["neurons"].items():
        assert 0.01 < theirs[path].mean() < 0.5, path
        np.testing.assert_array_equal(trace.spikes[node], theirs[path], err_msg=path)
    np.testing.assert_allclose(trace.readout, outputs.sum(axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_spikingjelly_model_zoo_spiking_vgg11_bn_spike_for_spike():
    """SpikingJelly's own Spiking-VGG-11 builder (BN, IF, five max pools, its classifier's neurons
    and dropouts) at the 3 x 224 x 224 its adaptive pool expects; two random images, two steps."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_vgg

    torch.manual_seed(0)
    model = spiking_vgg.spiking_vgg11_bn(spiking_neuron=neuron.IFNode, num_classes=10)
    functional.set_step_mode(model, "m")
    model = torch_nets._scaled(model, seed=8, gain=2.0)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 224, 224)).astype(np.uint8)
    theirs, outputs = torch_nets.run(model, pixels, shape=(3, 224, 224), steps=2)
    net = network_from_module(model, (3, 224, 224), 2)
    trace = execute.run(net, execute.encode(net, pixels))
    assert len(net.metadata["torch"]["neurons"]) == len(theirs) == 10
    for path, node in net.metadata["torch"]["neurons"].items():
        assert 0.05 < theirs[path].mean() < 0.5, path
        np.testing.assert_array_equal(trace.spikes[node], theirs[path], err_msg=path)
    np.testing.assert_allclose(trace.readout, outputs.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_max_pool_over_spikes_is_exact():
    """Spiking-VGG's max pools (also with overlapping windows): snnc's window sum into neurons
    firing at 1 gives SpikingJelly's max pool outputs exactly."""
    model = torch_nets.vgg_net()
    pooled = {}
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.MaxPool2d):
            module.register_forward_hook(lambda m, i, o, key=path: pooled.__setitem__(key, o.detach().numpy()))
    net = torch_nets.compare(model)
    trace = execute.run(net, execute.encode(net, torch_nets.digits()))
    for path, expected in pooled.items():
        node = net.node(f"conv2d{path}")
        assert node.attrs["groups"] == node.shape[0] and expected.any()
        np.testing.assert_array_equal(trace.spikes[node.name], expected, err_msg=path)


def test_threshold_dependent_batch_norm_is_its_batch_norm():
    """SpikingJelly's tdBN: a batch norm whose weight starts at alpha x v_th (its own forward does
    not run with this torch, so its parameters are read against torch's batch norm formula)."""
    from spikingjelly.activation_based import layer

    tdbn = layer.ThresholdDependentBatchNorm2d(alpha=0.5, v_th=2.0, num_features=3).double().eval()
    with torch.no_grad():
        tdbn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        tdbn.running_var.copy_(torch.tensor([0.5, 1.5, 2.0]))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), tdbn, torch_nets.neuron.IFNode(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 26 * 26, 10)).double()
    node = network_from_module(model, (1, 28, 28), 4).nodes[1]
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    expected = torch.nn.functional.batch_norm(x, tdbn.running_mean, tdbn.running_var, tdbn.weight.detach(),
                                              tdbn.bias.detach(), eps=tdbn.eps)
    got = x * torch.from_numpy(node.bn.scale)[:, None, None] + torch.from_numpy(node.bn.shift)[:, None, None]
    assert float(tdbn.weight[0]) == 1.0
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)


def test_a_subclass_that_redefines_its_dynamics_is_refused():
    class Adaptive(torch_nets.neuron.LIFNode):
        def neuronal_charge(self, x):
            self.v = self.v + x - 0.1

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), Adaptive(), torch.nn.Linear(10, 10))
    with pytest.raises(InputError, match="module '2': .*Adaptive redefines neuronal_charge of "
                                         "spikingjelly.activation_based.neuron.LIFNode"):
        network_from_module(model, (1, 28, 28), 4)


def test_last_step_readout():
    torch_nets.compare(torch_nets.conv_net(), readout="last")


@pytest.mark.parametrize("build, message", [
    (lambda: torch.nn.Sequential(torch.nn.Linear(784, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10)),
     "module '1': torch.nn.modules.activation.ReLU has no snnc converter"),
    (lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10),
                                 torch_nets.neuron.IFNode(v_reset=0.5), torch.nn.Linear(10, 10)),
     "module '2': v_reset = 0.5"),
    (lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AvgPool2d(2), torch.nn.BatchNorm2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(338, 10)),
     "module '2': a batch norm after a avgpool"),
    (lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch_nets.neuron.IFNode()),
     "the output must be a Linear layer without neuron"),
])
def test_what_snnc_cannot_hold_is_refused_in_one_line(build, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        network_from_module(build(), (1, 28, 28), 4)


MODEL_FILE = textwrap.dedent("""
    import torch_nets


    def build():
        return torch_nets.conv_net()
""")


def _model(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_FILE)
    torch.save(torch_nets.conv_net().state_dict(), tmp_path / "weights.pt")
    return f"{tmp_path / 'model.py'}:build", tmp_path / "weights.pt"


def test_factory_and_weights_load_and_bad_weights_are_one_line_errors(tmp_path):
    spec, weights = _model(tmp_path)
    net = load_module(spec, weights, (1, 28, 28), torch_nets.T)
    reference = network_from_module(torch_nets.conv_net(), (1, 28, 28), torch_nets.T)
    assert all(np.array_equal(a.weight, b.weight) for a, b in zip(net.nodes, reference.nodes) if a.weight is not None)
    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="--weights .*other.pt: does not match the model"):
        load_module(spec, tmp_path / "other.pt", (1, 28, 28), torch_nets.T)
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")   # a module: code, not weights
    with pytest.raises(InputError, match="--weights .*pickled.pt: not a readable state dict"):
        load_module(spec, tmp_path / "pickled.pt", (1, 28, 28), torch_nets.T)
    with pytest.raises(InputError, match="no function 'missing'"):
        load_module(f"{tmp_path / 'model.py'}:missing", weights, (1, 28, 28), torch_nets.T)


def test_eval_and_inspect_take_the_module(tmp_path):
    """`snnc eval --model` is the module's own accuracy (its forward pass, on the same digits);
    `snnc inspect --model` shows its layers."""
    from snnc.data import load_dataset

    spec, weights = _model(tmp_path)
    common = ["--model", spec, "--weights", str(weights), "--T", str(torch_nets.T), "--input-shape", "1,28,28"]
    result = invoke("eval", *common, "--json")
    assert result.exit_code == 0, result.output
    data = load_dataset("mnist5k")
    _, outputs = torch_nets.run(torch_nets.conv_net(), data.test_images)
    expected = float((outputs.sum(axis=0).argmax(axis=1) == data.test_labels).mean())
    report = json.loads(result.stdout)
    assert report["samples"] == len(data.test_labels) and report["accuracy"] == expected
    result = invoke("inspect", *common)
    assert result.exit_code == 0 and "conv2d0" in result.output and "+BN" in result.output
    result = invoke("eval", *common, "--data", "none")
    assert result.exit_code == 2 and "measures nothing" in result.output


@pytest.mark.slow
def test_export_model_verify_on_every_backend(tmp_path):
    spec, weights = _model(tmp_path)
    out = tmp_path / "out"
    result = invoke("export", "--model", spec, "--weights", str(weights), "--T", str(torch_nets.T),
                    "--input-shape", "1,28,28", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["source_sha256"]) == {"model.py", "weights.pt"}
    result = invoke("verify", str(out), "--samples", "8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["equivalent"] and set(report["backends"]) == {"reference", "onnx", "onnx-step", "lava", "cycle"}
    result = invoke("export", "--model", spec, "--weights", str(weights), "-o", str(tmp_path / "x"))
    assert result.exit_code == 2 and "--model needs --T" in result.output
