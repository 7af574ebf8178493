"""Recipes (models/*.yaml) and the networks they describe, as a small graph of nodes.

The graph is the contract with the compiler frontend: `SNN.nodes` lists `GraphNode`s in
topological order; each node computes z = op(inputs), then z = bn(z) if it has a TdBN, then
output = neuron(z) if it has a neuron (spikes, or the per-step values of the Readout).
The recipe schema is documented in models/README.md.
"""
import copy
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from snnc.errors import InputError
from snnc.ir import MAX_T, check_shape, check_weight_count
from snnc.nn import Readout, SpikingNeuron, TdBN

OPS = ("conv2d", "linear", "avgpool", "flatten", "add")
NETWORK_INPUT = "input"


# ---------------------------------------------------------------- recipe schema and validation

ARCH_DEFAULTS = {
    "mnist_convnet": {"channels": [32, 64], "hidden": 128},
    "resnet19": {"channels": [128, 256, 512], "blocks": [3, 3, 2], "hidden": 256},
    "resnet20": {"channels": [16, 32, 64], "blocks": [3, 3, 3]},
    "vgg16": {"channels": [64, 128, 256, 512, 512], "convs": [2, 2, 3, 3, 3], "hidden": 512},
    "sew_resnet18": {"channels": [64, 128, 256, 512], "blocks": [2, 2, 2, 2]},
}
NEURON_TYPES = ("if", "lif", "srif")
BN_TYPES = ("tdbn", "none")
READOUTS = ("mean", "last")
RECIPE_FIELDS = ("name", "arch", "arch_params", "input_shape", "num_classes", "T", "neuron", "bn",
                 "readout")
NEURON_FIELDS = ("type", "vth", "tau", "decay_input", "reset", "reset_amount", "mpr", "imp",
                 "surrogate_alpha")


def _fail(source, field, message):
    raise InputError(f"recipe {source}: field '{field}' {message}")


def _check_int_list(source, field, value, length=None):
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        _fail(source, field, f"must be a list of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        _fail(source, field, f"must have {length} entries, got {len(value)}")


def _positive_number(source, field, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(source, field, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        _fail(source, field, f"must be finite, got {value!r}")
    if not value > 0:
        _fail(source, field, f"must be > 0, got {value!r}")
    return float(value)


def _flag(source, field, value):
    if not isinstance(value, bool):
        _fail(source, field, f"must be true or false, got {value!r}")
    return value


def _choice(source, field, value, choices):
    if value not in choices:
        _fail(source, field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _validate_neuron(source, spec):
    if not isinstance(spec, dict):
        _fail(source, "neuron", f"must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(NEURON_FIELDS))
    if unknown:
        _fail(source, f"neuron.{unknown[0]}", f"is unknown; known: {', '.join(NEURON_FIELDS)}")
    kind = _choice(source, "neuron.type", spec.get("type"), NEURON_TYPES)
    vth = _positive_number(source, "neuron.vth", spec.get("vth", 0.5))
    default_reset = "soft" if kind == "srif" else "hard"
    reset = _choice(source, "neuron.reset", spec.get("reset", default_reset), ("hard", "soft"))
    if kind == "srif" and reset != "soft":
        _fail(source, "neuron.reset", "must be soft for type srif (soft-reset IF)")
    reset_amount = _positive_number(source, "neuron.reset_amount",
                                    spec.get("reset_amount", 1.0 if kind == "srif" else vth))
    tau = _positive_number(source, "neuron.tau", spec.get("tau", 2.0))
    if kind == "lif" and not tau > 1.0:
        _fail(source, "neuron.tau", f"must be > 1 for a LIF neuron, got {tau}")
    return {
        "type": kind,
        "vth": vth,
        "tau": tau,
        "decay_input": _flag(source, "neuron.decay_input", spec.get("decay_input", False)),
        "reset": reset,
        "reset_amount": reset_amount,
        "mpr": _flag(source, "neuron.mpr", spec.get("mpr", False)),
        "imp": _flag(source, "neuron.imp", spec.get("imp", False)),
        "surrogate_alpha": _positive_number(source, "neuron.surrogate_alpha",
                                            spec.get("surrogate_alpha", 2.0)),
    }


def _validate_arch_params(source, arch, params):
    if not isinstance(params, dict):
        _fail(source, "arch_params", f"must be a mapping, got {params!r}")
    defaults = ARCH_DEFAULTS[arch]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        _fail(source, f"arch_params.{unknown[0]}",
              f"is unknown for arch {arch}; known: {', '.join(defaults)}")
    merged = {**copy.deepcopy(defaults), **params}
    for key, value in merged.items():
        if isinstance(defaults[key], list):
            _check_int_list(source, f"arch_params.{key}", value)
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            _fail(source, f"arch_params.{key}", f"must be a positive integer, got {value!r}")
    if arch == "mnist_convnet":
        _check_int_list(source, "arch_params.channels", merged["channels"], length=2)
    for per_stage in ("blocks", "convs"):
        if per_stage in merged:
            _check_int_list(source, f"arch_params.{per_stage}", merged[per_stage],
                            length=len(merged["channels"]))
    return merged


def validate_recipe(recipe, source="<dict>"):
    """A complete copy of `recipe` with defaults filled in; InputError naming the bad field."""
    if not isinstance(recipe, dict):
        raise InputError(f"recipe {source}: must be a mapping, got {type(recipe).__name__}")
    unknown = sorted(set(recipe) - set(RECIPE_FIELDS))
    if unknown:
        _fail(source, unknown[0], f"is unknown; known: {', '.join(RECIPE_FIELDS)}")
    for field in ("name", "arch", "input_shape", "num_classes", "T", "neuron"):
        if field not in recipe:
            _fail(source, field, "is missing")
    if not isinstance(recipe["name"], str) or not recipe["name"]:
        _fail(source, "name", f"must be a non-empty string, got {recipe['name']!r}")
    arch = _choice(source, "arch", recipe["arch"], tuple(ARCH_DEFAULTS))
    _check_int_list(source, "input_shape", recipe["input_shape"], length=3)
    check_shape(recipe["input_shape"], f"recipe {source}: field 'input_shape'")
    for field in ("num_classes", "T"):
        value = recipe[field]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            _fail(source, field, f"must be a positive integer, got {value!r}")
    if recipe["T"] > MAX_T:
        _fail(source, "T", f"= {recipe['T']} is above the limit of {MAX_T} time steps")
    return {
        "name": recipe["name"],
        "arch": arch,
        "arch_params": _validate_arch_params(source, arch, recipe.get("arch_params", {})),
        "input_shape": list(recipe["input_shape"]),
        "num_classes": recipe["num_classes"],
        "T": recipe["T"],
        "neuron": _validate_neuron(source, recipe["neuron"]),
        "bn": _choice(source, "bn", recipe.get("bn", "tdbn"), BN_TYPES),
        "readout": _choice(source, "readout", recipe.get("readout", "mean"), READOUTS),
    }


def load_recipe(path):
    """Read and validate a YAML recipe file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(f"recipe {path}: not valid YAML: {str(error).splitlines()[0]}") from None
    return validate_recipe(recipe, source=str(path))


# ---------------------------------------------------------------- the graph


class GraphNode(nn.Module):
    """One node: z = op(inputs); z = bn(z) if bn; output = neuron(z) if neuron else z."""

    def __init__(self, name, op, inputs, synapse=None, pool_kernel=None, pool_stride=None,
                 bn=None, neuron=None):
        super().__init__()
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        self.name = name
        self.op = op
        self.inputs = list(inputs)
        self.synapse = synapse
        self.pool_kernel = pool_kernel
        self.pool_stride = pool_stride
        self.bn = bn
        self.neuron = neuron

    def forward(self, *inputs):
        if self.op == "add":
            z = torch.stack(inputs).sum(dim=0)
        else:
            (x,) = inputs
            steps, batch = x.shape[:2]
            merged = x.flatten(0, 1)  # [T*B, ...]: one conv/linear/pool call for all time steps
            if self.op in ("conv2d", "linear"):
                merged = self.synapse(merged)
            elif self.op == "avgpool":
                merged = F.avg_pool2d(merged, self.pool_kernel, self.pool_stride)
            else:
                merged = merged.flatten(1)
            z = merged.unflatten(0, (steps, batch))
        if self.bn is not None:
            z = self.bn(z)
        return z if self.neuron is None else self.neuron(z)

    def extra_repr(self):
        extra = f", kernel={self.pool_kernel}, stride={self.pool_stride}" if self.op == "avgpool" else ""
        return f"name={self.name}, op={self.op}, inputs={self.inputs}{extra}"


class SNN(nn.Module):
    """A recipe's network: runs `nodes` in order; the last node is a linear with a Readout.

    shapes: each node's per-sample output shape, as the builder computed it (the compiler reads
    them instead of running the network to find them out).
    """

    def __init__(self, recipe, nodes, shapes):
        super().__init__()
        self.recipe = recipe
        self.nodes = nn.ModuleList(nodes)
        self.shapes = {node.name: tuple(shapes[node.name]) for node in nodes}

    def forward(self, x_seq, record=False):
        """x_seq [T, B, *input_shape] -> per-step readout values y [T, B, classes].

        With record=True also returns {node name: output [T, B, ...]} for every node.
        """
        outputs = {NETWORK_INPUT: x_seq}
        for node in self.nodes:
            outputs[node.name] = node(*(outputs[name] for name in node.inputs))
        y = outputs[self.nodes[-1].name]
        if not record:
            return y
        del outputs[NETWORK_INPUT]
        return y, outputs

    def readout(self, y):
        """Class scores from the per-step values, by the recipe's readout (mean or last)."""
        return self.nodes[-1].neuron.reduce(y)


class _GraphBuilder:
    """Appends nodes while tracking each node's per-sample output shape (for IMP and linear sizes)."""

    def __init__(self, recipe):
        self.recipe = recipe
        self.nodes = []
        self.shapes = {NETWORK_INPUT: tuple(recipe["input_shape"])}

    def _neuron(self, shape):
        spec = self.recipe["neuron"]
        return SpikingNeuron(
            kind="lif" if spec["type"] == "lif" else "if",
            vth=spec["vth"], tau=spec["tau"], decay_input=spec["decay_input"],
            reset=spec["reset"], reset_amount=spec["reset_amount"], mpr=spec["mpr"],
            imp_shape=shape if spec["imp"] else None, surrogate_alpha=spec["surrogate_alpha"])

    def _bn(self, channels, kind):
        if self.recipe["bn"] == "none":
            return None
        return TdBN(channels, vth=self.recipe["neuron"]["vth"], kind=kind)

    def _check_size(self, name, shape, weights=0):
        """Refuse a layer above the limits (snnc.ir) before its tensors are created."""
        if min(shape) < 1:
            raise ValueError(f"node {name} would have an empty output shape {shape}")
        where = f"recipe {self.recipe['name']}: node {name}"
        check_shape(shape, where)
        check_weight_count(weights, where)

    def _add_node(self, name, op, inputs, shape, spiking, neuron=None, **parts):
        if name in self.shapes:
            raise ValueError(f"duplicate node name {name!r}")
        self._check_size(name, shape)
        if spiking:
            neuron = self._neuron(shape)
        self.nodes.append(GraphNode(name, op, inputs, neuron=neuron, **parts))
        self.shapes[name] = shape
        return name

    def conv(self, name, source, out_channels, kernel=3, stride=1, spiking=True):
        in_channels, height, width = self.shapes[source]
        padding = kernel // 2
        shape = (out_channels, (height + 2 * padding - kernel) // stride + 1,
                 (width + 2 * padding - kernel) // stride + 1)
        self._check_size(name, shape, out_channels * in_channels * kernel * kernel)
        bn = self._bn(out_channels, "2d")
        synapse = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=bn is None)
        return self._add_node(name, "conv2d", [source], shape, spiking, synapse=synapse, bn=bn)

    def avgpool(self, name, source, kernel=2):
        channels, height, width = self.shapes[source]
        shape = (channels, height // kernel, width // kernel)
        return self._add_node(name, "avgpool", [source], shape, False, pool_kernel=kernel,
                              pool_stride=kernel)

    def global_avgpool_flatten(self, source):
        """Average each channel over the whole feature map, then flatten: [C, H, W] -> [C]."""
        channels, height, width = self.shapes[source]
        if height != width:
            raise ValueError(f"global pooling needs a square feature map, got {height}x{width}")
        pooled = self.avgpool("pool", source, kernel=height)
        return self.flatten("flatten", pooled)

    def flatten(self, name, source):
        size = 1
        for dim in self.shapes[source]:
            size *= dim
        return self._add_node(name, "flatten", [source], (size,), False)

    def linear(self, name, source, out_features, spiking=True):
        (in_features,) = self.shapes[source]
        self._check_size(name, (out_features,), out_features * in_features)
        bn = self._bn(out_features, "1d")
        synapse = nn.Linear(in_features, out_features, bias=bn is None)
        return self._add_node(name, "linear", [source], (out_features,), spiking, synapse=synapse,
                              bn=bn)

    def add(self, name, sources, spiking):
        shapes = {self.shapes[source] for source in sources}
        if len(shapes) != 1:
            raise ValueError(f"add node {name}: input shapes differ: {sorted(shapes)}")
        return self._add_node(name, "add", sources, shapes.pop(), spiking)

    def readout(self, source):
        """The output layer: linear (with bias, no BN) into the non-spiking integrator."""
        (in_features,) = self.shapes[source]
        classes = self.recipe["num_classes"]
        self._check_size("readout", (classes,), classes * in_features)
        return self._add_node("readout", "linear", [source], (classes,), False,
                              neuron=Readout(self.recipe["readout"]),
                              synapse=nn.Linear(in_features, classes))


def _mnist_convnet(graph, params):
    """conv-pool-conv-pool-fc-readout: small enough to train on 2 CPU cores in minutes."""
    c1, c2 = params["channels"]
    x = graph.conv("conv1", NETWORK_INPUT, c1)
    x = graph.avgpool("pool1", x)
    x = graph.conv("conv2", x, c2)
    x = graph.avgpool("pool2", x)
    x = graph.flatten("flatten", x)
    x = graph.linear("fc1", x, params["hidden"])
    graph.readout(x)


def _spiking_basic_block(graph, prefix, source, out_channels, stride):
    """ResNet19/20 block (tdBN-style): the shortcut is added to the currents before the neuron."""
    x = graph.conv(f"{prefix}_conv1", source, out_channels, stride=stride)
    x = graph.conv(f"{prefix}_conv2", x, out_channels, spiking=False)
    shortcut = source
    if stride != 1 or graph.shapes[source][0] != out_channels:
        shortcut = graph.conv(f"{prefix}_shortcut", source, out_channels, kernel=1, stride=stride,
                              spiking=False)
    return graph.add(f"{prefix}_add", [x, shortcut], spiking=True)


def _residual_stages(graph, source, channels, blocks, block):
    x = source
    for stage, (width, count) in enumerate(zip(channels, blocks), start=1):
        for index in range(1, count + 1):
            stride = 2 if stage > 1 and index == 1 else 1
            x = block(graph, f"layer{stage}_{index}", x, width, stride)
    return x


def _resnet19(graph, params):
    """ResNet19 of tdBN (Zheng et al. 2021): 3x3 stem, 3-3-2 basic blocks, fc hidden, readout."""
    channels = params["channels"]
    x = graph.conv("stem", NETWORK_INPUT, channels[0])
    x = _residual_stages(graph, x, channels, params["blocks"], _spiking_basic_block)
    x = graph.global_avgpool_flatten(x)
    x = graph.linear("fc1", x, params["hidden"])
    graph.readout(x)


def _resnet20(graph, params):
    """CIFAR ResNet-20 (He et al. 2016): 3x3 stem, three stages of 3 basic blocks, readout."""
    channels = params["channels"]
    x = graph.conv("stem", NETWORK_INPUT, channels[0])
    x = _residual_stages(graph, x, channels, params["blocks"], _spiking_basic_block)
    graph.readout(graph.global_avgpool_flatten(x))


def _vgg16(graph, params):
    """VGG16: 13 3x3 convs in 5 groups, each group followed by 2x2 avgpool, then 3 linear layers."""
    x = NETWORK_INPUT
    for group, (width, count) in enumerate(zip(params["channels"], params["convs"]), start=1):
        for index in range(1, count + 1):
            x = graph.conv(f"conv{group}_{index}", x, width)
        x = graph.avgpool(f"pool{group}", x)
    x = graph.flatten("flatten", x)
    x = graph.linear("fc1", x, params["hidden"])
    x = graph.linear("fc2", x, params["hidden"])
    graph.readout(x)


def _sew_block(graph, prefix, source, out_channels, stride):
    """SEW-ResNet block (Fang et al. 2021), ADD connection: spikes of the block plus spikes of
    the shortcut, summed without a neuron, so the output is an integer count, not a spike."""
    x = graph.conv(f"{prefix}_conv1", source, out_channels, stride=stride)
    x = graph.conv(f"{prefix}_conv2", x, out_channels)
    shortcut = source
    if stride != 1 or graph.shapes[source][0] != out_channels:
        shortcut = graph.conv(f"{prefix}_shortcut", source, out_channels, kernel=1, stride=stride)
    return graph.add(f"{prefix}_add", [x, shortcut], spiking=False)


def _sew_resnet18(graph, params):
    """SEW-ResNet18 for 32x32 input: 3x3 stem (no max pool), 2-2-2-2 SEW blocks, readout."""
    channels = params["channels"]
    x = graph.conv("stem", NETWORK_INPUT, channels[0])
    x = _residual_stages(graph, x, channels, params["blocks"], _sew_block)
    graph.readout(graph.global_avgpool_flatten(x))


_ARCHITECTURES = {
    "mnist_convnet": _mnist_convnet,
    "resnet19": _resnet19,
    "resnet20": _resnet20,
    "vgg16": _vgg16,
    "sew_resnet18": _sew_resnet18,
}


def build(recipe):
    """The untrained SNN of a recipe (validated first)."""
    recipe = validate_recipe(recipe)
    graph = _GraphBuilder(recipe)
    try:
        _ARCHITECTURES[recipe["arch"]](graph, recipe["arch_params"])
    except ValueError as error:
        raise InputError(f"recipe {recipe['name']}: arch {recipe['arch']} does not fit input_shape "
                         f"{recipe['input_shape']}: {error}") from None
    return SNN(recipe, graph.nodes, graph.shapes)
