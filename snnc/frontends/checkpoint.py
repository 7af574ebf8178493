"""Frontend: a checkpoint from `snnc train` (recipe + tensors) becomes a float Network.

snnc's PyTorch model is already a graph of IR ops (snnc.models.GraphNode), so the translation is one
node per node. The only rewrite: a spike tensor added directly into a neuron's currents (a ResNet
identity shortcut) gets an explicit identity synapse, so that every input of a spiking add is a
synapse group (that is how the hardware sums currents).
"""
from __future__ import annotations

import numpy as np
import torch

from snnc.ir import Affine, Network, Neuron, Node

PIXEL_ENCODING = {"kind": "direct", "scale": 1.0 / 255.0, "max": 255, "bits": 8,
                  "description": "pixel values 0-255 presented at every step; real value = pixel/255"}


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float64).cpu().numpy().copy()


def _bn_affine(bn) -> Affine:
    """Inference map of a batch norm: a = weight/sqrt(var + eps), b = bias - mean * a."""
    scale = _array(bn.weight) / np.sqrt(_array(bn.running_var) + bn.eps)
    return Affine(scale=scale, shift=_array(bn.bias) - _array(bn.running_mean) * scale)


def _neuron(module, shape: tuple[int, ...]) -> Neuron:
    from snnc.nn import Readout

    zeros = np.zeros(shape)
    if isinstance(module, Readout):
        return Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                      bias=zeros, initial_state=zeros.copy())
    initial = zeros if module.imp is None else np.broadcast_to(_array(module.imp), shape).copy()
    lif = module.kind == "lif"
    return Neuron(
        kind="spiking", threshold=np.full(shape, module.vth), reset=module.reset,
        reset_amount=np.full(shape, module.reset_amount) if module.reset == "soft" else None,
        bias=zeros, initial_state=initial, v_decay=1.0 / module.tau if lif else 0.0, u_decay=1.0,
        input_gain=1.0 / module.tau if lif and module.decay_input else 1.0, mpr=bool(module.mpr))


def _identity_synapse(name: str, source: Node) -> Node:
    channels = source.shape[0]
    if len(source.shape) == 3:
        weight = np.eye(channels).reshape(channels, channels, 1, 1)
        return Node(name=name, op="conv2d", inputs=[source.name], shape=source.shape, weight=weight,
                    attrs={"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0]})
    return Node(name=name, op="linear", inputs=[source.name], shape=source.shape, weight=np.eye(channels))


def network_from_model(model, name: str) -> Network:
    """Translate an snnc.models.SNN (eval mode) into a float Network."""
    recipe = model.recipe
    shapes = model.shapes
    nodes = [Node(name="input", op="input", inputs=[], shape=tuple(recipe["input_shape"]))]
    by_name = {"input": nodes[0]}
    for module in model.nodes:
        node = Node(name=module.name, op=module.op, inputs=list(module.inputs), shape=shapes[module.name])
        if module.op == "conv2d":
            conv = module.synapse
            node.attrs = {"kernel": list(conv.kernel_size), "stride": list(conv.stride),
                          "padding": list(conv.padding)}
        if module.op in ("conv2d", "linear"):
            node.weight = _array(module.synapse.weight)
            node.bias = None if module.synapse.bias is None else _array(module.synapse.bias)
        if module.op == "avgpool":
            node.attrs = {"kernel": module.pool_kernel, "stride": module.pool_stride}
        if module.bn is not None:
            node.bn = _bn_affine(module.bn)
        if module.neuron is not None:
            node.neuron = _neuron(module.neuron, node.shape)
        if module.op == "add" and module.neuron is not None:
            for index, source in enumerate(node.inputs):
                if by_name[source].op not in ("conv2d", "linear") or by_name[source].neuron is not None:
                    identity = _identity_synapse(f"{node.name}_identity{index}", by_name[source])
                    nodes.append(identity)
                    by_name[identity.name] = identity
                    node.inputs[index] = identity.name
        nodes.append(node)
        by_name[node.name] = node
    net = Network(name=name, T=int(recipe["T"]), readout=recipe["readout"], nodes=nodes,
                  encoding=dict(PIXEL_ENCODING), metadata={"recipe": recipe})
    net.validate()
    return net


def load_network(path) -> tuple[Network, dict]:
    """Float Network and the checkpoint dict of a checkpoint file (loaded with weights_only=True)."""
    from snnc.train import load_checkpoint

    model, checkpoint = load_checkpoint(path)
    name = checkpoint["recipe"].get("name", "network")
    return network_from_model(model, name), checkpoint
