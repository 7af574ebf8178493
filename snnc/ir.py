"""The snnc intermediate representation: one small, typed, serializable network description.

Every stage reads and writes this: the frontend builds a float `Network` from a checkpoint, the
passes rewrite it (folding tdBN, MPR and decay_input, then quantization to a fixed-point `Network`),
and every backend executes the fixed-point form. The on-disk form is documented in docs/ir.md:
`network.json` (structure and scalars) next to `network.npz` (arrays), with a format version.

Semantics of one node per time step (float arithmetic; the fixed-point rules are in
snnc/execute.py and docs/ir.md):
    z = op(inputs)                              conv2d / linear (+ op bias), sumpool, avgpool, flatten, add
    z = bn.scale * z + bn.shift                 if bn (per channel; removed by fold_bn)
    I = (1 - u_decay) * I + z                   synaptic current (u_decay = 1: no current memory)
    H = (1 - v_decay) * U + input_gain * I + neuron.bias
    O = phi(H) >= threshold  (phi = MPR if neuron.mpr else identity)
    U = H * (1 - O) (hard) | H - reset_amount * O (soft) | H (integrator)
"""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from snnc.errors import InputError

FORMAT_VERSION = 1
OPS = ("input", "conv2d", "linear", "avgpool", "sumpool", "flatten", "add")
SYNAPTIC_OPS = ("conv2d", "linear")
NEURON_KINDS = ("spiking", "integrator")
RESETS = ("hard", "soft", "none")
READOUTS = ("mean", "last")


@dataclass
class Affine:
    """A per-channel affine map y = scale * x + shift: a batch norm at inference."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass
class Neuron:
    """Per-neuron parameters, each array shaped like the node's per-sample output.

    In a float network decays are fractions lost per step (v_decay = 1/tau for LIF, 0 for IF;
    u_decay = 1 means the current has no memory). In a fixed-point network they are the hardware
    registers dv and du of Loihi's CUBA neuron: v keeps (unit - dv)/unit, u keeps
    (unit - du - 1)/unit, unit = 2**decay_bits of the network's arithmetic (snnc.fixedpoint).
    """

    kind: str
    threshold: Optional[np.ndarray]
    reset: str
    reset_amount: Optional[np.ndarray]
    bias: np.ndarray
    initial_state: np.ndarray
    v_decay: float = 0.0
    u_decay: float = 1.0
    input_gain: float = 1.0
    mpr: bool = False


@dataclass
class Node:
    """One operation, optionally followed by a batch norm and a neuron population."""

    name: str
    op: str
    inputs: list[str]
    shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    weight: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    bn: Optional[Affine] = None
    neuron: Optional[Neuron] = None
    scale: Optional[np.ndarray] = None

    @property
    def spiking(self) -> bool:
        return self.neuron is not None and self.neuron.kind == "spiking"


@dataclass
class Network:
    """A whole SNN: nodes in topological order, the last one the readout integrator.

    `arithmetic` is {"kind": "float"} or the fixed-point rules copied from the target at
    quantization time (so executing a fixed network needs no target file).
    """

    name: str
    T: int
    readout: str
    nodes: list[Node]
    arithmetic: dict = field(default_factory=lambda: {"kind": "float"})
    encoding: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    @property
    def fixed(self) -> bool:
        return self.arithmetic["kind"] == "fixed"

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        return [node for node in self.nodes if name in node.inputs]

    @property
    def input_node(self) -> Node:
        return self.nodes[0]

    @property
    def output_node(self) -> Node:
        return self.nodes[-1]

    def spiking_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.spiking]

    def copy(self) -> "Network":
        return _from_parts(*_to_parts(self))

    def validate(self) -> None:
        """Check structure and shapes; raises InputError naming the node."""
        if self.T < 1:
            raise InputError(f"network '{self.name}': T must be at least 1, got {self.T}")
        if self.readout not in READOUTS:
            raise InputError(f"network '{self.name}': readout must be one of {READOUTS}")
        seen = set()
        for node in self.nodes:
            where = f"node '{node.name}'"
            if node.op not in OPS:
                raise InputError(f"{where}: unknown op '{node.op}'")
            if node.name in seen:
                raise InputError(f"{where}: duplicate name")
            for name in node.inputs:
                if name not in seen:
                    raise InputError(f"{where}: input '{name}' is not an earlier node")
            seen.add(node.name)
            if node.op in SYNAPTIC_OPS and node.weight is None:
                raise InputError(f"{where}: {node.op} without weights")
            neuron = node.neuron
            if neuron is not None:
                if neuron.kind not in NEURON_KINDS or neuron.reset not in RESETS:
                    raise InputError(f"{where}: bad neuron kind/reset")
                arrays = [neuron.bias, neuron.initial_state]
                if neuron.kind == "spiking":
                    arrays.append(neuron.threshold)
                if neuron.reset == "soft":
                    arrays.append(neuron.reset_amount)
                for array in arrays:
                    if array is None or tuple(array.shape) != tuple(node.shape):
                        raise InputError(f"{where}: neuron parameter shape does not match {node.shape}")
                    if not np.all(np.isfinite(array)):
                        raise InputError(f"{where}: neuron parameters contain NaN or Inf")
            for array in (node.weight, node.bias):
                if array is not None and not np.all(np.isfinite(array)):
                    raise InputError(f"{where}: weights contain NaN or Inf")
        if self.nodes[0].op != "input" or self.output_node.neuron is None \
                or self.output_node.neuron.kind != "integrator":
            raise InputError(f"network '{self.name}': must start with an input and end with a readout")


# --- on-disk form ---------------------------------------------------------------------------

def _to_parts(net: Network) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}

    def keep(key: str, value):
        if isinstance(value, np.ndarray):
            arrays[key] = value
            return {"array": key}
        return value

    nodes = []
    for node in net.nodes:
        entry = {"name": node.name, "op": node.op, "inputs": list(node.inputs),
                 "shape": list(node.shape), "attrs": node.attrs}
        for name in ("weight", "bias", "scale"):
            entry[name] = keep(f"{node.name}/{name}", getattr(node, name))
        entry["bn"] = None if node.bn is None else {
            "scale": keep(f"{node.name}/bn.scale", node.bn.scale),
            "shift": keep(f"{node.name}/bn.shift", node.bn.shift)}
        if node.neuron is None:
            entry["neuron"] = None
        else:
            entry["neuron"] = {f.name: keep(f"{node.name}/neuron.{f.name}", getattr(node.neuron, f.name))
                               for f in dataclasses.fields(Neuron)}
        nodes.append(entry)
    doc = {"format": "snnc-ir", "format_version": FORMAT_VERSION, "name": net.name, "T": net.T,
           "readout": net.readout, "arithmetic": net.arithmetic, "encoding": net.encoding,
           "metadata": net.metadata, "nodes": nodes}
    return doc, arrays


def _from_parts(doc: dict, arrays: dict[str, np.ndarray]) -> Network:
    def take(value):
        if isinstance(value, dict) and set(value) == {"array"}:
            return np.array(arrays[value["array"]], copy=True)
        return value

    nodes = []
    for entry in doc["nodes"]:
        bn = entry["bn"]
        neuron = entry["neuron"]
        nodes.append(Node(
            name=entry["name"], op=entry["op"], inputs=list(entry["inputs"]),
            shape=tuple(entry["shape"]), attrs=dict(entry["attrs"]),
            weight=take(entry["weight"]), bias=take(entry["bias"]), scale=take(entry["scale"]),
            bn=None if bn is None else Affine(take(bn["scale"]), take(bn["shift"])),
            neuron=None if neuron is None else Neuron(**{k: take(v) for k, v in neuron.items()}),
        ))
    return Network(name=doc["name"], T=doc["T"], readout=doc["readout"], nodes=nodes,
                   arithmetic=dict(doc["arithmetic"]), encoding=dict(doc["encoding"]),
                   metadata=dict(doc["metadata"]))


def deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend only on the arrays (numpy's savez stamps the time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def save(net: Network, directory: Path) -> list[Path]:
    """Write network.json and network.npz into `directory`; returns the paths written."""
    doc, arrays = _to_parts(net)
    directory = Path(directory)
    json_path, npz_path = directory / "network.json", directory / "network.npz"
    json_path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    npz_path.write_bytes(deterministic_npz(arrays))
    return [json_path, npz_path]


def load(directory: Path) -> Network:
    """Read a network saved by `save`; raises InputError on a missing or malformed file."""
    directory = Path(directory)
    try:
        doc = json.loads((directory / "network.json").read_text())
        with np.load(directory / "network.npz", allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as error:
        raise InputError(f"{directory}: not an snnc network ({Path(error.filename).name} missing)")
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{directory}: unreadable network files ({error})")
    if doc.get("format") != "snnc-ir" or doc.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{directory}: network format {doc.get('format')!r} version "
                         f"{doc.get('format_version')!r} is not snnc-ir version {FORMAT_VERSION}")
    try:
        net = _from_parts(doc, arrays)
    except (KeyError, TypeError) as error:
        raise InputError(f"{directory}: malformed network.json ({error})")
    net.validate()
    return net
