"""Frontend: a PyTorch module, as people write SNNs (torch.nn layers, SpikingJelly, snnTorch),
becomes a float snnc Network.

The module is traced with torch.fx, every module type that has a converter being a leaf (neurons
keep their state across calls, which fx cannot trace through). Each leaf goes to the converter
registered for its type (`CONVERTERS`: qualified class name -> function, looked up along the
type's MRO, so a library's subclass of nn.Conv2d is converted as one); torch.nn's converters are
here, each other library's in its own small file (snnc/frontends/spikingjelly.py, snntorch.py)
that registers them when imported. A converter gets the `Builder`, the module and the IR nodes its inputs come
from, and returns the IR node its output is. A neuron module becomes the `neuron` of the node
feeding it (a batch norm its `bn`), so the IR keeps synapse -> batch norm -> neuron as one node;
a module snnc has no converter for is refused with one line naming its type and where it sits.

The input is pixel/255 at every step (snnc's direct encoding); a last synaptic layer without a
neuron is the readout integrator: its per-step outputs summed over the T steps (readout 'mean',
the order of their mean) or its last step alone (readout 'last', last-time-step training); an
snnc.nn.Readout after it keeps its own mode. snnc's own modules (snnc.nn: SpikingNeuron with IMP and
MPR, TdBN, Readout) are read as the checkpoint frontend reads them.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import operator
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from snnc.errors import InputError, UsageError
from snnc.frontends.checkpoint import PIXEL_ENCODING, _bn_affine, _identity_synapse
from snnc.ir import Network, Neuron, Node, check_shape, check_steps, conv_output_shape, pool_output_shape

CONVERTERS: dict[str, Callable] = {}
LIBRARY_CONVERTERS = {"spikingjelly.": "snnc.frontends.spikingjelly",   # module prefix -> converter file
                      "snntorch.": "snnc.frontends.snntorch"}
READOUTS = ("mean", "last")


def converter(*qualified_names: str):
    """Register a function as the converter of module types given by their qualified class names."""
    def register(function):
        for name in qualified_names:
            CONVERTERS[name] = function
        return function
    return register


def _qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# A subclass that redefines one of these computes something its base's converter does not read
COMPUTING_METHODS = ("forward", "_conv_forward", "single_step_forward", "multi_step_forward", "neuronal_charge",
                     "neuronal_fire", "neuronal_reset", "fire", "mem_reset", "state_function",
                     "_base_state_function")


def converter_for(module: torch.nn.Module) -> Optional[Callable]:
    """The converter of a module's type or of its nearest registered base class; for a subclass
    that redefines how the base computes, a converter that refuses it (never a silent guess)."""
    for prefix, file in LIBRARY_CONVERTERS.items():
        if type(module).__module__.startswith(prefix):
            importlib.import_module(file)
    mro = type(module).__mro__
    for index, cls in enumerate(mro):
        if _qualified(cls) in CONVERTERS:
            redefined = sorted({name for sub in mro[:index] for name in COMPUTING_METHODS if name in vars(sub)})
            if redefined:
                def refuse(builder, *args, base=_qualified(cls), names=redefined):
                    raise builder.refuse(f"{_qualified(type(module))} redefines {', '.join(names)} of {base}, "
                                         f"which snnc's converter for {base} does not read")
                return refuse
            return CONVERTERS[_qualified(cls)]
    return None


def array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float64).cpu().numpy().copy()


class Builder:
    """The IR nodes made so far, the converters' view of them and the notes they leave."""

    def __init__(self, input_shape: tuple[int, ...]):
        self.nodes: list[Node] = [Node(name="input", op="input", inputs=[], shape=input_shape)]
        self.neurons: dict[str, str] = {}     # neuron module path -> the IR node holding it
        self.notes: list[str] = []
        self.where = ""                       # the module path being converted
        self.readout: Optional[str] = None    # set by a readout module (snnc.nn.Readout)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def fresh(self, hint: str) -> str:
        names = {node.name for node in self.nodes}
        name, count = hint.replace(".", "_") or "node", 1
        while name in names:
            name, count = f"{hint.replace('.', '_')}_{count}", count + 1
        return name

    def add(self, node: Node) -> str:
        """Add a node named after its module path (prefixed by its op where the path is an index)."""
        node.name = self.fresh(f"{node.op}{node.name}" if node.name[:1].isdigit() else node.name)
        self.nodes.append(node)
        return node.name

    def convert(self, module: torch.nn.Module, *sources: str) -> str:
        """The IR node of `module`'s output, by its type's converter (refused where it has none)."""
        convert = converter_for(module)
        if convert is None:
            raise self.refuse(f"{_qualified(type(module))} has no snnc converter "
                              f"(docs/interop.md lists the module types snnc reads)")
        return convert(self, module, *sources)

    def refuse(self, why: str) -> InputError:
        return InputError(f"module '{self.where}': {why}")

    def consumers(self, name: str) -> list[Node]:
        return [node for node in self.nodes if name in node.inputs]

    def open_synapse(self, source: str, what: str) -> Node:
        """The node a batch norm or a neuron attaches to: a conv2d, linear or add of synapses
        without neuron, read by nothing else yet; another source (the input, spikes, a pool) gets
        an identity synapse first."""
        node = self.node(source)
        if node.op in ("conv2d", "linear") or (node.op == "add" and all(
                self.node(name).op in ("conv2d", "linear") and self.node(name).neuron is None for name in node.inputs)):
            if node.neuron is not None or self.consumers(source):
                raise self.refuse(f"a {what} after '{source}', whose output is already used")
            return node
        if what == "batch norm":
            raise self.refuse(f"a batch norm after a {node.op} (snnc folds batch norms into a synapse)")
        return self.node(self.add(_identity_synapse(f"{source}_identity", node)))


@converter("torch.nn.modules.conv.Conv2d")
def conv2d(builder: Builder, module, source: str) -> str:
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise builder.refuse(f"conv padding {module.padding!r} / {module.padding_mode!r} (snnc pads with zeros)")
    shape_in = builder.node(source).shape
    attrs = {"kernel": list(module.kernel_size), "stride": list(module.stride), "padding": list(module.padding)}
    if tuple(module.dilation) != (1, 1):
        attrs["dilation"] = list(module.dilation)
    if module.groups != 1:
        attrs["groups"] = int(module.groups)
    shape = conv_output_shape(shape_in, module.out_channels, module.kernel_size, module.stride, module.padding,
                              f"module '{builder.where}'", module.dilation, module.groups)
    return builder.add(Node(name=builder.where, op="conv2d", inputs=[source], shape=shape, attrs=attrs,
                            weight=array(module.weight), bias=None if module.bias is None else array(module.bias)))


@converter("torch.nn.modules.linear.Linear")
def linear(builder: Builder, module, source: str) -> str:
    shape_in = builder.node(source).shape
    if len(shape_in) != 1:
        source = flatten(builder, None, source)
    if builder.node(source).shape[0] != module.in_features:
        raise builder.refuse(f"Linear({module.in_features}, ...) after an input of {builder.node(source).shape[0]}")
    return builder.add(Node(name=builder.where, op="linear", inputs=[source], shape=(module.out_features,),
                            weight=array(module.weight), bias=None if module.bias is None else array(module.bias)))


@converter("torch.nn.modules.batchnorm.BatchNorm2d", "torch.nn.modules.batchnorm.BatchNorm1d")
def batch_norm(builder: Builder, module, source: str) -> str:
    node = builder.open_synapse(source, "batch norm")
    if node.bn is not None or module.running_mean is None or not module.affine:
        raise builder.refuse("a batch norm without running statistics or affine parameters, or a second one")
    node.bn = _bn_affine(module)
    return node.name


def _square(value) -> Optional[int]:
    """One int for a square size given as an int or a pair; None for a non-square one."""
    values = {int(v) for v in (value if isinstance(value, (tuple, list)) else (value,))}
    return values.pop() if len(values) == 1 else None


@converter("torch.nn.modules.pooling.AvgPool2d")
def avg_pool(builder: Builder, module, source: str) -> str:
    kernel, stride = _square(module.kernel_size), _square(module.stride)
    if kernel is None or stride is None or _square(module.padding) != 0 or module.ceil_mode:
        raise builder.refuse("an average pool other than square, unpadded and floor-mode")
    shape = pool_output_shape(builder.node(source).shape, kernel, stride, f"module '{builder.where}'")
    return builder.add(Node(name=builder.where, op="avgpool", inputs=[source], shape=shape,
                            attrs={"kernel": int(kernel), "stride": int(stride)}))


@converter("torch.nn.modules.pooling.AdaptiveAvgPool2d")
def adaptive_avg_pool(builder: Builder, module, source: str) -> str:
    """An adaptive average pool whose output size divides its input: an average pool."""
    shape = builder.node(source).shape
    size = module.output_size if isinstance(module.output_size, (tuple, list)) else (module.output_size,) * 2
    size = tuple(shape[1 + i] if s is None else int(s) for i, s in enumerate(size))
    if len(shape) != 3 or shape[1] != shape[2] or size[0] != size[1] or shape[1] % size[0]:
        raise builder.refuse(f"an adaptive average pool from {list(shape[1:])} to {list(size)} (snnc pools square "
                             f"windows: the output size must divide a square input)")
    if size[0] == shape[1]:
        return source
    kernel = shape[1] // size[0]
    return builder.add(Node(name=builder.where, op="avgpool", inputs=[source], shape=(shape[0],) + size,
                            attrs={"kernel": kernel, "stride": kernel}))


@converter("torch.nn.modules.pooling.MaxPool2d")
def max_pool(builder: Builder, module, source: str) -> str:
    """Over binary spikes the max of a window is 'some spike in it': a sum over the window (a conv
    of ones per channel, groups = channels) into memoryless neurons that fire at 1 (exact)."""
    node = builder.node(source)
    kernel, stride, padding = _square(module.kernel_size), _square(module.stride), _square(module.padding)
    if kernel is None or stride is None or padding is None or _square(module.dilation) != 1 \
            or module.ceil_mode or module.return_indices:
        raise builder.refuse("a max pool other than square, undilated and floor-mode")
    if not node.spiking or node.neuron.kind != "spiking" or node.neuron.max_spikes != 1:
        raise builder.refuse(f"a max pool over '{source}', which is not a layer of binary spikes (snnc holds a max "
                             f"pool exactly only over spikes)")
    channels = node.shape[0]
    # padding: a zero is no spike, as max pooling's -inf padding never wins over a 0/1 spike
    attrs = {"kernel": [kernel, kernel], "stride": [stride, stride], "padding": [padding, padding], "groups": channels}
    shape = conv_output_shape(node.shape, channels, (kernel, kernel), (stride, stride), (padding, padding),
                              f"module '{builder.where}'", groups=channels)
    name = builder.add(Node(name=builder.where, op="conv2d", inputs=[source], shape=shape, attrs=attrs,
                            weight=np.ones((channels, 1, kernel, kernel))))
    ones = np.ones(shape)
    builder.node(name).neuron = Neuron(kind="spiking", threshold=ones, reset="hard", reset_amount=None,
                                       bias=np.zeros(shape), initial_state=np.zeros(shape), v_decay=1.0)
    builder.notes.append(f"module '{builder.where}': max pool over spikes held as a window sum into neurons "
                         f"firing at 1 (the mapper counts its {channels} groups channel-dense)")
    return name


@converter("torch.nn.modules.flatten.Flatten")
def flatten(builder: Builder, module, source: str) -> str:
    shape = builder.node(source).shape
    if len(shape) == 1:
        return source
    name = builder.where if module is not None else f"{source}_flatten"
    return builder.add(Node(name=name, op="flatten", inputs=[source], shape=(math.prod(shape),)))


@converter("torch.nn.modules.dropout.Dropout", "torch.nn.modules.linear.Identity",
           "torch.nn.modules.dropout.Dropout2d")
def identity(builder: Builder, module, source: str) -> str:
    return source


def add(builder: Builder, sources: list[str]) -> str:
    """A residual add: of spike tensors (SEW), or of synapse outputs that a neuron then reads."""
    shapes = {builder.node(name).shape for name in sources}
    if len(shapes) != 1:
        raise builder.refuse(f"an add of shapes {sorted(shapes)}")
    return builder.add(Node(name=builder.where or "add", op="add", inputs=list(sources), shape=shapes.pop()))


def neuron(builder: Builder, source: str, made: Neuron) -> str:
    """Attach a neuron population (made for the node's shape) to the synapse feeding it."""
    node = builder.open_synapse(source, "neuron")
    node.neuron = made
    builder.neurons[builder.where] = node.name
    return node.name


@converter("snnc.nn.SpikingNeuron")
def snnc_neuron(builder: Builder, module, source: str) -> str:
    """snnc's own neuron (snnc.nn): IF/LIF, hard or soft reset, a learnable initial membrane
    potential (IMP, its `imp` parameter) and MPR, read as snnc's checkpoint frontend reads them."""
    from snnc.frontends.checkpoint import _neuron

    return neuron(builder, source, _neuron(module, builder.open_synapse(source, "neuron").shape))


@converter("snnc.nn.Readout")
def snnc_readout(builder: Builder, module, source: str) -> str:
    """snnc's readout integrator, with its mode (mean over the steps of the running sum, or its
    last step): the readout the network reports."""
    from snnc.frontends.checkpoint import _neuron

    node = builder.open_synapse(source, "readout")
    node.neuron = _neuron(module, node.shape)
    builder.readout = module.mode
    return node.name


@converter("snnc.nn.TdBN")
def snnc_tdbn(builder: Builder, module, source: str) -> str:
    return batch_norm(builder, module, source)


FUNCTIONS = {torch.flatten: "flatten", operator.add: "add", torch.add: "add"}


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, module, qualified_name):
        return converter_for(module) is not None or super().is_leaf_module(module, qualified_name)


def network_from_module(module: torch.nn.Module, input_shape, T: int, readout: str = "mean",
                        name: str = "network") -> Network:
    """A float Network computing what `module` (eval mode) computes on pixel/255 at every step."""
    if readout not in READOUTS:
        raise UsageError(f"readout must be one of {READOUTS}, got {readout!r}")
    T = check_steps(T, f"module '{name}'")
    builder = Builder(check_shape(list(input_shape), f"module '{name}': input shape"))
    module = module.eval()
    try:
        graph = _Tracer().trace(module)
    except Exception as error:   # fx's own errors name the Python construct it cannot trace
        raise InputError(f"module '{name}': torch.fx cannot trace its forward ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160]})") from None
    modules = dict(module.named_modules())
    values: dict[str, str] = {}
    output = None
    for fx_node in graph.nodes:
        args = [values[a.name] if isinstance(a, torch.fx.Node) else a for a in fx_node.args]
        builder.where = str(fx_node.target)
        if fx_node.op == "placeholder":
            if values:
                raise InputError(f"module '{name}': forward takes more than one input")
            values[fx_node.name] = "input"
        elif fx_node.op == "call_module":
            values[fx_node.name] = builder.convert(modules[fx_node.target], *args)
        elif fx_node.op == "call_function" and FUNCTIONS.get(fx_node.target) == "add":
            builder.where = fx_node.name
            values[fx_node.name] = add(builder, [a for a in args if isinstance(a, str)])
        elif fx_node.op in ("call_function", "call_method") and (
                FUNCTIONS.get(fx_node.target) == "flatten" or fx_node.target == "flatten"):
            builder.where = fx_node.name
            values[fx_node.name] = flatten(builder, None, args[0])
        elif fx_node.op == "output":
            output = args[0]
        else:
            raise InputError(f"module '{name}': {fx_node.op} {fx_node.target} in forward has no snnc "
                             f"converter")
    nodes = builder.nodes
    last = builder.node(output)
    if builder.readout is not None:   # the module's own readout integrator
        readout_rule = builder.readout
    elif last.op not in ("conv2d", "linear") or last.neuron is not None or len(last.shape) != 1:
        raise InputError(f"module '{name}': the output must be a Linear layer without neuron (the readout), "
                         f"it is '{last.name}' ({last.op}{' with neurons' if last.neuron else ''})")
    else:
        zeros = np.zeros(last.shape)
        last.neuron = Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None, bias=zeros,
                             initial_state=zeros.copy(), v_decay=1.0 if readout == "last" else 0.0)
        readout_rule = "last"   # the running sum's last step (T x the mean), or the last step alone
    if nodes[-1] is not last:
        raise InputError(f"module '{name}': layers after the readout '{last.name}' are not used")
    metadata = {"source": "torch module", "torch": {"neurons": dict(builder.neurons), "notes": builder.notes,
                                                    "readout": readout}}
    net = Network(name=name, T=T, readout=readout_rule, nodes=nodes, encoding=dict(PIXEL_ENCODING), metadata=metadata)
    net.validate()
    return net


def load_factory(spec: str) -> Callable[[], torch.nn.Module]:
    """FILE.py:FACTORY -> the factory function, the user's own code imported as they would run it."""
    file, _, factory = spec.rpartition(":")
    if not file or not factory:
        raise UsageError(f"--model {spec!r}: give FILE.py:FACTORY")
    path = Path(file)
    if not path.is_file():
        raise InputError(f"--model: no such file {path}")
    module_name = f"snnc_model_{abs(hash(str(path.resolve())))}"
    spec_ = importlib.util.spec_from_file_location(module_name, path)
    code = importlib.util.module_from_spec(spec_)
    sys.modules[module_name] = code
    try:
        spec_.loader.exec_module(code)
    except Exception as error:
        raise InputError(f"--model {path}: importing it failed ({type(error).__name__}: {error})") from None
    if not callable(getattr(code, factory, None)):
        raise InputError(f"--model {path}: no function '{factory}' in it")
    return getattr(code, factory)


def load_module(spec: str, weights, input_shape, T: int, readout: str = "mean") -> Network:
    """The user's model from its factory, its weights loaded with weights_only=True, as a Network."""
    try:
        model = load_factory(spec)()
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"--model {spec}: the factory failed ({type(error).__name__}: {error})") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--model {spec}: the factory returned a {type(model).__name__}, not a torch module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"--weights: no such file {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise InputError(f"--weights {path}: not a readable state dict ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:120]})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, KeyError) as error:
            raise InputError(f"--weights {path}: does not match the model "
                             f"({str(error).splitlines()[0][:160]})") from None
    return network_from_module(model, input_shape, T, readout, name=Path(spec.rpartition(":")[0]).stem)
