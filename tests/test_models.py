"""Recipes and the graph contract that the compiler frontend reads."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from snnc.errors import InputError
from snnc.models import OPS, GraphNode, build, load_recipe, validate_recipe
from snnc.nn import Readout, SpikingNeuron, TdBN

MODELS = Path(__file__).resolve().parent.parent / "models"
RECIPES = sorted(MODELS.glob("*.yaml"))
# the recipes other than MNIST (ResNets, VGG16: millions of parameters) take seconds each: in the slow tier
RUNNABLE = [pytest.param(path, marks=pytest.mark.slow) if not path.stem.startswith("mnist") else path
            for path in RECIPES]


def test_every_architecture_has_a_shipped_recipe():
    archs = {load_recipe(path)["arch"] for path in RECIPES}
    assert archs == {"mnist_convnet", "resnet19", "resnet20", "vgg16", "sew_resnet18"}


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda path: path.stem)
def test_recipe_builds_and_runs_untrained(path):
    recipe = load_recipe(path)
    torch.manual_seed(0)
    model = build(recipe).eval()
    steps, batch = 2, 2  # any T runs; 2 keeps the 12M-parameter nets quick on 2 cores
    with torch.no_grad():
        y, outputs = model(torch.rand(steps, batch, *recipe["input_shape"]), record=True)
    assert y.shape == (steps, batch, recipe["num_classes"])
    assert list(outputs) == [node.name for node in model.nodes]
    assert all(out.shape[:2] == (steps, batch) for out in outputs.values())
    assert {name: tuple(out.shape[2:]) for name, out in outputs.items()} == model.shapes  # what the compiler reads
    assert torch.equal(outputs[model.nodes[-1].name], y)
    assert model.readout(y).shape == (batch, recipe["num_classes"])


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_graph_contract(path):
    model = build(load_recipe(path))
    seen = {"input"}
    for node in model.nodes:
        assert isinstance(node, GraphNode) and node.op in OPS
        assert node.name not in seen and "." not in node.name
        assert node.inputs and set(node.inputs) <= seen, f"{node.name} reads a later node"
        seen.add(node.name)
        if node.op == "conv2d":
            assert isinstance(node.synapse, nn.Conv2d) and node.synapse.padding_mode == "zeros"
        elif node.op == "linear":
            assert isinstance(node.synapse, nn.Linear)
        else:
            assert node.synapse is None
        if node.op == "avgpool":
            assert type(node.pool_kernel) is int and type(node.pool_stride) is int
        assert node.bn is None or isinstance(node.bn, TdBN)
        assert node.neuron is None or isinstance(node.neuron, (SpikingNeuron, Readout))
        assert len(node.inputs) == 1 or node.op == "add"
    last = model.nodes[-1]
    assert last.op == "linear" and isinstance(last.neuron, Readout)
    assert not any(isinstance(node.neuron, Readout) for node in model.nodes[:-1])


def nodes_by_name(recipe_path):
    return {node.name: node for node in build(load_recipe(MODELS / recipe_path)).nodes}


def test_resnet_block_adds_currents_before_the_neuron():
    nodes = nodes_by_name("resnet19.yaml")
    assert nodes["layer1_1_conv2"].neuron is None and nodes["layer1_1_conv2"].bn is not None
    assert isinstance(nodes["layer1_1_add"].neuron, SpikingNeuron)
    assert nodes["layer1_1_add"].inputs == ["layer1_1_conv2", "stem"]  # identity shortcut
    assert nodes["layer2_1_add"].inputs == ["layer2_1_conv2", "layer2_1_shortcut"]
    assert nodes["layer2_1_shortcut"].synapse.stride == (2, 2)


def test_sew_block_adds_spikes_without_a_neuron():
    nodes = nodes_by_name("sew_resnet18.yaml")
    add = nodes["layer1_1_add"]
    assert add.op == "add" and add.neuron is None
    assert all(isinstance(nodes[name].neuron, SpikingNeuron) for name in add.inputs)
    assert isinstance(nodes["layer2_1_shortcut"].neuron, SpikingNeuron)


def test_node_semantics_op_then_bn_then_neuron(tiny_recipe):
    torch.manual_seed(0)
    model = build(tiny_recipe)
    x = torch.rand(2, 3, 1, 8, 8)
    _, outputs = model(x, record=True)
    conv1 = model.nodes[0]
    currents = conv1.bn(conv1.synapse(x.flatten(0, 1)).unflatten(0, (2, 3)))
    assert torch.equal(outputs["conv1"], conv1.neuron(currents))
    assert set(outputs["conv1"].unique().tolist()) <= {0.0, 1.0}
    pooled = torch.nn.functional.avg_pool2d(outputs["conv1"].flatten(0, 1), 2).unflatten(0, (2, 3))
    assert torch.equal(outputs["pool1"], pooled)


def test_imp_follows_the_recipe(tiny_recipe):
    model = build(tiny_recipe)
    imps = {name: tuple(p.shape) for name, p in model.named_parameters() if name.endswith(".imp")}
    assert imps == {"nodes.0.neuron.imp": (8, 8, 8), "nodes.2.neuron.imp": (16, 4, 4),
                    "nodes.5.neuron.imp": (32,)}
    tiny_recipe["neuron"]["imp"] = False
    assert not any(name.endswith(".imp") for name, _ in build(tiny_recipe).named_parameters())


def test_recipe_defaults_are_filled(tiny_recipe):
    recipe = validate_recipe(tiny_recipe)
    assert recipe["neuron"]["reset"] == "soft" and recipe["neuron"]["reset_amount"] == 1.0
    assert validate_recipe(recipe) == recipe
    lif = copy.deepcopy(tiny_recipe)
    lif["neuron"] = {"type": "lif"}
    assert validate_recipe(lif)["neuron"]["reset"] == "hard"


@pytest.mark.parametrize("change, field", [
    (lambda r: r.pop("T"), "'T' is missing"),
    (lambda r: r.update(T=0), "'T' must be a positive integer"),
    (lambda r: r.update(arch="lenet"), "'arch' must be one of"),
    (lambda r: r.update(colour="red"), "'colour' is unknown"),
    (lambda r: r.update(input_shape=[28, 28]), "'input_shape' must have 3 entries"),
    (lambda r: r["neuron"].update(type="izhikevich"), "'neuron.type' must be one of"),
    (lambda r: r["neuron"].update(reset="hard"), "'neuron.reset' must be soft for type srif"),
    (lambda r: r["neuron"].update(vth=-1), "'neuron.vth' must be > 0"),
    (lambda r: r["neuron"].update(mpr="yes"), "'neuron.mpr' must be true or false"),
    (lambda r: r["arch_params"].update(channels=[4]), "'arch_params.channels' must have 2 entries"),
    (lambda r: r["arch_params"].update(depth=3), "'arch_params.depth' is unknown"),
    (lambda r: r.update(bn="layernorm"), "'bn' must be one of"),
    (lambda r: r.update(readout="max"), "'readout' must be one of"),
])
def test_bad_recipe_names_the_field(tiny_recipe, change, field):
    change(tiny_recipe)
    with pytest.raises(InputError, match=field):
        build(tiny_recipe)


def test_recipe_too_deep_for_its_input(tiny_recipe):
    tiny_recipe["input_shape"] = [1, 2, 2]
    with pytest.raises(InputError, match="does not fit input_shape"):
        build(tiny_recipe)


def test_load_recipe_errors(tmp_path):
    with pytest.raises(InputError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="must be a mapping"):
        load_recipe(listed)
