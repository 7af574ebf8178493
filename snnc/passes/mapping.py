"""Mapping a fixed-point network onto a target's neuromorphic cores (docs/cycle-simulator.md).

Model, in short:
- Populations: the network input (fed by the host through an input port) and every node with a
  neuron (spiking layers and the readout integrator). Every other node (sumpool, flatten, an `add`
  without neuron, the conv/linear branches of a ResNet `add`) is part of a synaptic path.
- Axons: the elements of a synaptic node's input tensor X. A sum pool (kernel == stride) and a
  flatten between a population and X are done on the sending core, which sends one graded message
  per non-zero pooled value; a SEW `add` of two populations gives each X element one axon per
  population. Partitions are aligned to the pooling blocks, so every axon has one sending core.
- Partition: a layer's neurons are split into cores of (channel group) x (spatial tile); a linear
  layer of N neurons is N channels at one position. For each layer the partition with the fewest
  cores that satisfies every per-core limit is chosen (fan-in, synaptic memory, neurons, fan-out).
- Synapses are structural (every kernel tap inside the input, zero weights included), each stored
  as weight_bits + index_bits (index_bits = ceil(log2(neurons_per_core))), plus the bits of the
  largest delay where the synapse group has axonal delays; an axon's synapse list on a core is
  packed into whole 64-bit words.
- Recurrent synapses (a population reading its own spikes of the previous step): one per non-zero
  entry of node.recurrent; every neuron of the layer is an axon into the cores holding its targets.
  They count in fan-in, synaptic memory, fan-out and the synapses of their cores.
- Axonal delays: at most `limits.max_delay` steps (a design rule naming the node).
- Multi-spike populations (neuron.max_spikes > 1) send their count as one graded message: only on
  a target with `limits.graded_spikes`, within `limits.graded_spike_bits` (a design rule naming
  the population).
- Placement: layers in topological order on consecutive cores; cores are numbered tile by tile in
  serpentine order over the tile grid (row 0 west to east, row 1 east to west, ...), and within a
  tile row-major. A tile is `limits.tile` cores ([2, 2] when the target does not say).
- Systems of several chips (`limits.chips: [rows, columns]`, each chip `limits.cores` cores on its
  `limits.mesh`): chips are numbered in serpentine order over the chip grid, so consecutive layers
  sit on the same or a neighbouring chip; a layer starts on the next chip when that puts it on fewer
  chips than continuing where the previous layer ended. Positions are on the system's mesh of
  cores (chip (i, j) holds rows i * mesh rows ..., columns j * mesh columns ...).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

from snnc.errors import DesignRuleError, InputError
from snnc.export_dir import artifact_writer
from snnc.ir import Network, Node, conv_dilation
from snnc.passes.fold import synaptic_inputs
from snnc.passes.quantize import largest_outputs

WORD_BITS = 64
DEFAULT_TILE = (2, 2)
FORMAT = "snnc-mapping"
FORMAT_VERSION = 2
MAX_ROUNDS = 6


# ------------------------------------------------------------------------- network analysis

@dataclass
class Group:
    """The synapses of one neuron layer that read one input tensor X.

    Axons live on X's elements before any flatten (`pre_shape` = (C, H, W); a 1-D tensor is
    (N, 1, 1)); `reach` [X positions, layer positions] is 1 where a position of X has synapses to a
    position of the layer (all channels to all channels: conv2d and linear are channel-dense).
    """

    tensor: str
    synapses: list[str]
    kind: str                        # 'conv' or 'linear'
    pre_shape: tuple[int, int, int]
    sources: list[tuple[str, tuple[int, int]]]  # populations feeding X and their pooling block
    reach: sparse.csr_matrix = None
    delay_bits: int = 0              # bits of the largest axonal delay on X (0: no delays)
    kernel_entries: int = 0          # conv: weights per output channel over the group's kernels

    @property
    def channels(self) -> int:
        return self.pre_shape[0]


@dataclass
class Layer:
    """One population as the mapper sees it: (C, H, W), a linear layer of N neurons is (N, 1, 1)."""

    name: str
    op: str
    shape: tuple[int, ...]
    C: int
    H: int
    W: int
    groups: list[Group] = field(default_factory=list)
    depth: int = 0
    block: tuple[int, int] = (1, 1)       # pooling that follows: aligned tiles are multiples of it
    consumers: list[tuple[str, int, tuple[int, int]]] = field(default_factory=list)  # (layer, group, block)
    recurrent: sparse.coo_matrix = None   # [neurons, neurons] 1 per recurrent synapse (target i, source j)


def _as_chw(shape) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 1:
        return (shape[0], 1, 1)
    raise ValueError(f"cannot map a tensor of shape {shape}")


def _trace_sources(net: Network, name: str) -> list[tuple[str, tuple[int, int]]]:
    """Populations whose output reaches tensor `name` through sum pools, flattens and adds."""
    node = net.node(name)
    if node.op == "input" or node.neuron is not None:
        return [(node.name, (1, 1))]
    if node.op in ("sumpool", "avgpool"):
        k, s = node.attrs["kernel"], node.attrs["stride"]
        if k != s:
            raise DesignRuleError(f"layer '{node.name}': overlapping pooling (kernel {k}, stride {s}) "
                                  f"cannot be mapped; the mapper supports kernel == stride")
        return [(src, (fy * k, fx * k)) for src, (fy, fx) in _trace_sources(net, node.inputs[0])]
    if node.op == "flatten":
        return _trace_sources(net, node.inputs[0])
    if node.op == "add":
        found = []
        for inp in node.inputs:
            for item in _trace_sources(net, inp):
                if item not in found:
                    found.append(item)
        return found
    raise ValueError(f"node '{name}': a {node.op} without neuron cannot feed a synapse")


def _pre_flatten(net: Network, name: str) -> tuple[int, int, int]:
    node = net.node(name)
    while node.op == "flatten":
        node = net.node(node.inputs[0])
    return _as_chw(node.shape)


def _conv_reach(node: Node, x_hw, d_hw) -> sparse.csr_matrix:
    """[X positions, output positions]: the kernel taps that fall inside X (padding excluded)."""
    (hx, wx), (hd, wd) = x_hw, d_hw
    (kh, kw), (sy, sx), (py, px) = node.attrs["kernel"], node.attrs["stride"], node.attrs["padding"]
    dy, dx = conv_dilation(node.attrs)
    ys, xs = np.arange(hd), np.arange(wd)
    dest = ys[:, None] * wd + xs[None, :]
    rows, cols = [], []
    for i in range(kh):
        src_y = ys * sy - py + i * dy
        for j in range(kw):
            src_x = xs * sx - px + j * dx
            valid = ((src_y >= 0) & (src_y < hx))[:, None] & ((src_x >= 0) & (src_x < wx))[None, :]
            rows.append((src_y[:, None] * wx + src_x[None, :])[valid])
            cols.append(dest[valid])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    reach = sparse.csr_matrix((np.ones(len(rows), np.int64), (rows, cols)), shape=(hx * wx, hd * wd))
    reach.data[:] = 1
    return reach


def largest_delay(node: Node) -> int:
    """The largest axonal delay (steps) on a synaptic node's input; 0 without delays."""
    return 0 if node.delay is None else int(np.max(node.delay, initial=0))


def recurrent_synapses(node: Node) -> sparse.coo_matrix | None:
    """A population's recurrent synapses [target neuron, source neuron] (flat C order): one per
    non-zero recurrent weight (a zero entry of the matrix connects nothing)."""
    if node.recurrent is None:
        return None
    matrix = sparse.coo_matrix(np.asarray(node.recurrent) != 0, dtype=np.int64)
    matrix.sum_duplicates()
    return matrix


def check_delays(net: Network, target) -> None:
    """The design rule on axonal delays: none longer than the target's limits.max_delay."""
    limit = int(target.limits["max_delay"])
    for node in net.nodes:
        if largest_delay(node) > limit:
            raise DesignRuleError(f"layer '{node.name}': axonal delay of {largest_delay(node)} steps exceeds "
                                  f"{target.name}'s max_delay of {limit} steps")


def payload_bits(node: Node, net: Network) -> int:
    """Bits a population's spike message carries: ceil(log2(max_spikes + 1)) for a count, 1 for a
    binary population, the signed magnitude of a sigma-delta message (quantize.largest_outputs),
    and 0 for a node without spikes."""
    if not node.spiking:
        return 0
    if node.neuron.kind == "sigma_delta":
        return largest_outputs(net)[node.name].bit_length() + 1
    return node.neuron.max_spikes.bit_length()


def check_graded_spikes(net: Network, target) -> None:
    """The design rule on multi-spike populations: they send counts, which needs a target whose
    spikes carry a payload (limits.graded_spikes), of at most limits.graded_spike_bits bits."""
    width = target.limits.get("graded_spike_bits")
    for node in net.spiking_nodes():
        if not node.neuron.graded:
            continue
        counts = node.neuron.max_spikes
        what = "a sigma-delta population (graded messages)" if node.neuron.kind == "sigma_delta" \
            else f"a multi-spike population (up to {counts} spikes per step)"
        if not target.limits["graded_spikes"]:
            raise DesignRuleError(f"layer '{node.name}': {what} needs graded spikes, and {target.name} sends "
                                  f"binary spikes only")
        bits = payload_bits(node, net)
        if width is not None and bits > width:
            raise DesignRuleError(f"layer '{node.name}': {what} needs {bits}-bit spike payloads, above "
                                  f"{target.name}'s graded_spike_bits of {width}")


def analyse(net: Network) -> dict[str, Layer]:
    """The populations of `net`: the input (host) first, then every neuron layer in topological
    order, with their synapse groups, synaptic depth and consumers."""
    first = net.input_node
    layers: dict[str, Layer] = {first.name: Layer(first.name, "input", tuple(first.shape), *_as_chw(first.shape))}
    for node in net.nodes:
        if node.neuron is None:
            continue
        C, H, W = _as_chw(node.shape)
        groups: dict[str, Group] = {}
        for syn in synaptic_inputs(net, node):
            x = syn.inputs[0]
            pre = _pre_flatten(net, x)
            if syn.op == "conv2d":
                kind, reach = "conv", _conv_reach(syn, pre[1:], (H, W))
            else:
                kind = "linear"
                reach = sparse.csr_matrix(np.ones((pre[1] * pre[2], 1), np.int64))
            if x in groups:
                group = groups[x]
                if group.kind != kind:
                    raise ValueError(f"layer '{node.name}': mixes conv and linear synapses on '{x}'")
                merged = (group.reach + reach).tocsr()
                merged.data[:] = 1
                group.reach = merged
                group.synapses.append(syn.name)
            else:
                group = groups[x] = Group(tensor=x, synapses=[syn.name], kind=kind, pre_shape=pre,
                                          sources=_trace_sources(net, x), reach=reach)
            group.delay_bits = max(group.delay_bits, largest_delay(syn).bit_length())
            if kind == "conv":
                group.kernel_entries += int(np.prod(np.shape(syn.weight)[1:]))
        layer = Layer(name=node.name, op=node.op, shape=tuple(node.shape), C=C, H=H, W=W,
                      groups=list(groups.values()), recurrent=recurrent_synapses(node))
        layer.depth = 1 + max(layers[src].depth for g in layer.groups for src, _ in g.sources)
        layers[node.name] = layer
    for layer in layers.values():
        for index, group in enumerate(layer.groups):
            for src, block in group.sources:
                layers[src].consumers.append((layer.name, index, block))
    for layer in layers.values():
        by = bx = 1
        for _, _, (fy, fx) in layer.consumers:
            by, bx = math.lcm(by, fy), math.lcm(bx, fx)
        layer.block = (min(by, layer.H), min(bx, layer.W))
    return layers


# ------------------------------------------------------------------------------ partitions

@dataclass(frozen=True)
class Partition:
    """Cores of one layer: channel groups of `group` channels x spatial tiles of `tile` positions.
    Core order inside a layer: tile by tile (row-major), channel groups inside a tile."""

    group: int
    tile: tuple[int, int]

    def tiles(self, H: int, W: int) -> list[tuple[int, int, int, int]]:
        th, tw = self.tile
        return [(y, min(y + th, H), x, min(x + tw, W)) for y in range(0, H, th) for x in range(0, W, tw)]

    def channel_ranges(self, C: int) -> list[tuple[int, int]]:
        return [(c, min(c + self.group, C)) for c in range(0, C, self.group)]

    def cores(self, C: int, H: int, W: int) -> int:
        return len(self.tiles(H, W)) * len(self.channel_ranges(C))


def whole(layer: Layer) -> Partition:
    """The host's 'partition' of the input: everything in one place."""
    return Partition(layer.C, (layer.H, layer.W))


def segments(extent: int, tile: int, block: int, count: int) -> list[tuple[int, int, int, int]]:
    """Along one axis: (pooled index, sending tile index, start, end) for the pieces of each pooling
    block that lie in one tile of the sender; `count` pooled indices (rows beyond them are dropped)."""
    out = []
    for index in range(count):
        y, end = index * block, min((index + 1) * block, extent)
        while y < end:
            t = y // tile
            stop = min(end, (t + 1) * tile)
            out.append((index, t, y, stop))
            y = stop
    return out


def axon_parts(group: Group, block, source: Layer, part: Partition) -> np.ndarray:
    """Per X position, how many sending cores (of one channel) contribute: one axon each."""
    _, hx, wx = group.pre_shape
    rows = np.bincount([s[0] for s in segments(source.H, part.tile[0], block[0], hx)], minlength=hx)
    cols = np.bincount([s[0] for s in segments(source.W, part.tile[1], block[1], wx)], minlength=wx)
    return (rows[:, None] * cols[None, :]).ravel().astype(np.int64)


def _tile_matrix(H: int, W: int, tile) -> sparse.csr_matrix:
    th, tw = tile
    ntx = -(-W // tw)
    ys, xs = np.divmod(np.arange(H * W), W)
    index = (ys // th) * ntx + (xs // tw)
    count = -(-H // th) * ntx
    return sparse.csr_matrix((np.ones(H * W, np.int64), (np.arange(H * W), index)), shape=(H * W, count))


def tile_reach(group: Group, layer: Layer, tile) -> sparse.coo_matrix:
    """[X positions, tiles]: how many positions of each tile of the layer a position of X reaches."""
    return (group.reach @ _tile_matrix(layer.H, layer.W, tile)).tocoo()


def _candidates(extent: int, block: int) -> list[int]:
    sizes = set()
    for n in range(1, extent + 1):
        size = -(-extent // n)
        sizes.add(min(extent, -(-size // block) * block))
    return sorted(sizes)


class _Packing:
    """How a core stores synapses: one packed list per (axon, core); on a target with
    `limits.conv_weights: shared`, a convolution's kernels once per core instead (docs/cycle-simulator.md)."""

    def __init__(self, target):
        self.weight_bits = int(target.arithmetic["weight_bits"])
        self.index_bits = max(1, math.ceil(math.log2(target.limits["neurons_per_core"])))
        self.bits = self.weight_bits + self.index_bits
        self.shared_conv = target.limits.get("conv_weights", "per_connection") == "shared"
        self.conv_axon_bits = int(target.limits.get("conv_axon_bits", 0))

    def words(self, synapses: np.ndarray, delay_bits: int = 0) -> np.ndarray:
        return -(-(synapses * (self.bits + delay_bits)) // WORD_BITS)

    def shares(self, group: "Group") -> bool:
        """Whether the core holds this group's kernels once (a conv without axonal delays)."""
        return self.shared_conv and group.kind == "conv" and group.delay_bits == 0

    def describe(self) -> dict:
        described = {
            "model": "one synapse list per (axon, core), packed in 64-bit words",
            "word_bits": WORD_BITS, "weight_bits": self.weight_bits, "index_bits": self.index_bits,
            "bits_per_synapse": self.bits,
            "delay_bits": "a synapse group with axonal delays adds the bits of its largest delay per synapse",
            "rule": "memory bits = 64 * sum over the core's axons of ceil(synapses * bits_per_synapse / 64)"}
        if self.shared_conv:
            described["conv_weights"] = "shared"
            described["conv_rule"] = (f"a conv input group without delays: its kernels once per core (channels held x "
                                      f"weights per channel x weight_bits, in whole words) + {self.conv_axon_bits} "
                                      f"bits per axon")
        return described


@dataclass
class _TileStats:
    """One candidate tiling of a layer: per tile what does not depend on the channel group."""

    tile: tuple[int, int]
    tiles: list
    fan_in: np.ndarray          # [tiles] axons
    positions: np.ndarray       # [tiles] positions (neurons per channel)
    reach: list                 # per group: (coo [X positions, tiles], axons per X position)


def _tile_stats(layer: Layer, tile, mults: list[np.ndarray]) -> _TileStats:
    tiles = Partition(1, tile).tiles(layer.H, layer.W)
    count = len(tiles)
    fan_in = np.zeros(count, np.int64)
    reach = []
    for group, mult in zip(layer.groups, mults):
        r = tile_reach(group, layer, tile)
        fan_in += group.channels * np.bincount(r.col, weights=mult[r.row], minlength=count).astype(np.int64)
        reach.append((r, mult))
    positions = np.array([(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in tiles], np.int64)
    return _TileStats(tuple(tile), tiles, fan_in, positions, reach)


def _memory_bits(layer: Layer, stats: _TileStats, g: int, packing: _Packing) -> np.ndarray:
    """Synaptic memory per tile for a core holding `g` channels of it."""
    count = len(stats.tiles)
    words = np.zeros(count, np.int64)
    bits = np.zeros(count, np.int64)
    for group, (r, mult) in zip(layer.groups, stats.reach):
        if packing.shares(group):   # the kernels once, plus each axon's entry
            axons = group.channels * np.bincount(r.col, weights=mult[r.row], minlength=count).astype(np.int64)
            kernel = -(-(g * group.kernel_entries * packing.weight_bits) // WORD_BITS) * WORD_BITS
            bits += np.where(axons > 0, kernel, 0) + axons * packing.conv_axon_bits
            continue
        per = packing.words(g * r.data, group.delay_bits) * mult[r.row]
        words += group.channels * np.bincount(r.col, weights=per, minlength=count).astype(np.int64)
    return words * WORD_BITS + bits


def _synapses(layer: Layer, stats: _TileStats) -> np.ndarray:
    """Synapses per tile and channel held."""
    count = len(stats.tiles)
    total = np.zeros(count, np.int64)
    for group, (r, mult) in zip(layer.groups, stats.reach):
        total += group.channels * np.bincount(r.col, weights=r.data * mult[r.row], minlength=count).astype(np.int64)
    return total


def core_of_neurons(layer: Layer, part: Partition) -> np.ndarray:
    """For every neuron of the layer (flat C order), the index of its core within the layer."""
    (th, tw), groups = part.tile, len(part.channel_ranges(layer.C))
    channel, position = np.divmod(np.arange(layer.C * layer.H * layer.W), layer.H * layer.W)
    y, x = np.divmod(position, layer.W)
    return ((y // th) * -(-layer.W // tw) + x // tw) * groups + channel // part.group


@dataclass
class _Recurrent:
    """What a layer's recurrent synapses put on each of its cores (layer core order)."""

    synapses: np.ndarray    # synapses held
    fan_in: np.ndarray      # axons: the layer's neurons with a synapse on the core
    memory: np.ndarray      # bits: one packed list per such axon
    fan_out: np.ndarray     # output axons: (neuron of the core, core holding one of its targets) pairs


def _recurrent(layer: Layer, part: Partition, packing: _Packing) -> _Recurrent:
    cores = part.cores(layer.C, layer.H, layer.W)
    core = core_of_neurons(layer, part)
    synapses = layer.recurrent
    neurons = synapses.shape[1]
    pairs, per_pair = np.unique(core[synapses.row] * neurons + synapses.col, return_counts=True)
    dest, source = np.divmod(pairs, neurons)     # one axon each: source neuron into dest core
    return _Recurrent(synapses=np.bincount(core[synapses.row], minlength=cores),
                      fan_in=np.bincount(dest, minlength=cores),
                      memory=WORD_BITS * np.bincount(dest, weights=packing.words(per_pair),
                                                     minlength=cores).astype(np.int64),
                      fan_out=np.bincount(core[source], minlength=cores))


def _core_loads(layer: Layer, stats: _TileStats, g: int, packing: _Packing,
                out_per_channel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fan-in axons, synaptic memory bits and output axons of every core [tiles, channel groups]
    when cores hold `g` channels of the layer (a tile's last group, which may hold fewer, is
    counted as full), its recurrent synapses included."""
    groups = -(-layer.C // g)
    fan_in = np.repeat(stats.fan_in[:, None], groups, axis=1)
    memory = np.repeat(_memory_bits(layer, stats, g, packing)[:, None], groups, axis=1)
    fan_out = np.repeat(g * out_per_channel[:, None], groups, axis=1)
    if layer.recurrent is not None:
        own = _recurrent(layer, Partition(g, stats.tile), packing)
        fan_in = fan_in + own.fan_in.reshape(fan_in.shape)
        memory = memory + own.memory.reshape(memory.shape)
        fan_out = fan_out + own.fan_out.reshape(fan_out.shape)
    return fan_in, memory, fan_out


class _FanOut:
    """Output axons of a layer's cores given its consumers' partitions: one per (X element whose
    pooling block overlaps the core, destination core that X element has synapses on)."""

    def __init__(self, layer: Layer, layers: dict[str, Layer], parts: dict[str, Partition]):
        self.items = []
        for dest_name, gi, (fy, fx) in layer.consumers:
            dest, part = layers[dest_name], parts[dest_name]
            group = dest.groups[gi]
            _, hx, wx = group.pre_shape
            n_groups = len(part.channel_ranges(dest.C))
            r = tile_reach(group, dest, part.tile)
            tiles_reached = np.bincount(r.row, minlength=hx * wx)
            per_position = (tiles_reached * n_groups).reshape(hx, wx)
            integral = np.zeros((hx + 1, wx + 1), np.int64)
            integral[1:, 1:] = per_position.cumsum(0).cumsum(1)
            self.items.append((integral, fy, fx, hx, wx))

    def per_channel(self, tiles) -> np.ndarray:
        out = np.zeros(len(tiles), np.int64)
        for integral, fy, fx, hx, wx in self.items:
            for i, (y0, y1, x0, x1) in enumerate(tiles):
                a, b = y0 // fy, min((y1 - 1) // fy + 1, hx)
                c, d = x0 // fx, min((x1 - 1) // fx + 1, wx)
                if b > a and d > c:
                    out[i] += integral[b, d] - integral[a, d] - integral[b, c] + integral[a, c]
        return out


def _search(layer: Layer, limits: dict, packing: _Packing, mults, fan_out, aligned: bool):
    npc, max_in = limits["neurons_per_core"], limits["fan_in_axons_per_core"]
    max_mem, max_out = limits["synaptic_memory_bits_per_core"], limits["fan_out_per_core"]
    by, bx = layer.block if aligned else (1, 1)
    best, best_key = None, None
    for th in _candidates(layer.H, by):
        for tw in _candidates(layer.W, bx):
            stats = _tile_stats(layer, (th, tw), mults)
            if stats.fan_in.max() > max_in:
                continue
            out = fan_out.per_channel(stats.tiles) if fan_out else np.zeros(len(stats.tiles), np.int64)

            def fits(g: int) -> bool:
                if g * stats.positions.max() > npc:
                    return False
                fan_in, memory, outputs = _core_loads(layer, stats, g, packing, out)
                return fan_in.max() <= max_in and outputs.max() <= max_out and memory.max() <= max_mem

            lo, hi = 0, layer.C
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fits(mid):
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0:
                continue
            key = (-(-layer.C // lo) * len(stats.tiles), len(stats.tiles), -th, -tw)
            if best_key is None or key < best_key:
                best, best_key = Partition(lo, (th, tw)), key
    return best


def _partition(layer: Layer, limits: dict, packing: _Packing, mults, fan_out) -> Partition:
    """The partition with the fewest cores; tiles aligned to the pooling that follows when any
    aligned tiling fits (then each pooled value has one sending core), else any tiling."""
    best = _search(layer, limits, packing, mults, fan_out, aligned=True)
    if best is None and layer.block != (1, 1):
        best = _search(layer, limits, packing, mults, fan_out, aligned=False)
    if best is None:
        raise DesignRuleError(_why_not(layer, limits, packing, mults, fan_out))
    return best


def _why_not(layer: Layer, limits: dict, packing: _Packing, mults, fan_out) -> str:
    """The design-rule message for a layer of which not even one neuron fits a core."""
    stats = _tile_stats(layer, (1, 1), mults)
    where = f"layer '{layer.name}'"
    out = fan_out.per_channel(stats.tiles) if fan_out else np.zeros(len(stats.tiles), np.int64)
    fan_in, memory, outputs = (int(load.max()) for load in _core_loads(layer, stats, 1, packing, out))
    if fan_in > limits["fan_in_axons_per_core"]:
        return (f"{where}: fan-in {fan_in} axons exceeds the target's {limits['fan_in_axons_per_core']} "
                f"per core (a single neuron's inputs cannot be split across cores)")
    if memory > limits["synaptic_memory_bits_per_core"]:
        return (f"{where}: a single neuron needs {memory} bits of synaptic memory, above the target's "
                f"{limits['synaptic_memory_bits_per_core']} per core")
    return (f"{where}: a single neuron's fan-out of {outputs} output axons exceeds the target's "
            f"{limits['fan_out_per_core']} per core")


def _mults(layer: Layer, layers: dict[str, Layer], parts: dict[str, Partition]) -> list[np.ndarray]:
    out = []
    for group in layer.groups:
        total = np.zeros(group.pre_shape[1] * group.pre_shape[2], np.int64)
        for src, block in group.sources:
            total += axon_parts(group, block, layers[src], parts[src])
        out.append(total)
    return out


def _worst_fan_out(layer: Layer, layers: dict[str, Layer], parts: dict[str, Partition], packing: _Packing) -> int:
    """The most output axons on one core of the layer under the current partitions."""
    part = parts[layer.name]
    stats = _tile_stats(layer, part.tile, _mults(layer, layers, parts))
    out = (_FanOut(layer, layers, parts).per_channel(stats.tiles) if layer.consumers
           else np.zeros(len(stats.tiles), np.int64))
    return int(_core_loads(layer, stats, part.group, packing, out)[2].max())


def partition_network(net: Network, target, fixed: dict[str, Partition] | None = None,
                      layers: dict[str, Layer] | None = None) -> tuple[dict[str, Layer], dict[str, Partition]]:
    """Choose every layer's partition (topological order: a layer's fan-in depends on how its
    sources are split). Fan-out depends on the consumers, so layers whose fan-out breaks the limit
    are partitioned again under that constraint until nothing changes: in reverse order, so that a
    layer is split for its consumers as they are then split (a layer's own split depends on its
    sources only through pooling blocks split between senders, which rarely changes)."""
    limits, packing = target.limits, _Packing(target)
    layers = layers or analyse(net)
    names = list(layers)
    parts = {names[0]: whole(layers[names[0]])}
    fixed = fixed or {}
    constrained = False
    for _ in range(MAX_ROUNDS):
        changed = False
        for name in (reversed(names[1:]) if constrained else names[1:]):
            layer = layers[name]
            if name in fixed:
                new = fixed[name]
            else:
                fan_out = _FanOut(layer, layers, parts) if constrained and layer.consumers else None
                new = _partition(layer, limits, packing, _mults(layer, layers, parts), fan_out)
            changed |= parts.get(name) != new
            parts[name] = new
        worst = {name: _worst_fan_out(layers[name], layers, parts, packing) for name in names[1:]}
        if all(out <= limits["fan_out_per_core"] for out in worst.values()):
            return layers, parts
        if constrained and not changed:
            break
        constrained = True
    bad = next(name for name, out in worst.items() if out > limits["fan_out_per_core"])
    raise DesignRuleError(f"layer '{bad}': fan-out {worst[bad]} output axons exceeds the target's "
                          f"{limits['fan_out_per_core']} per core")


# ------------------------------------------------------------------------------- placement

def tile_shape(target) -> tuple[int, int]:
    tile = target.limits.get("tile", list(DEFAULT_TILE))
    return int(tile[0]), int(tile[1])


def core_positions(mesh, tile, cores: int | None = None, chips=(1, 1)) -> list[tuple[int, int]]:
    """Positions (row, col) of the system's cores in placement order: chips in serpentine order
    over the chip grid, on each chip its first `cores` (default: all) in the order of its tiles in
    serpentine order over the tile grid, cores row-major inside a tile."""
    rows, cols = mesh
    tr, tc = tile
    on_chip = []
    for ty in range(-(-rows // tr)):
        tx_range = range(-(-cols // tc))
        for tx in (tx_range if ty % 2 == 0 else reversed(tx_range)):
            for r in range(ty * tr, min((ty + 1) * tr, rows)):
                for c in range(tx * tc, min((tx + 1) * tc, cols)):
                    on_chip.append((r, c))
    on_chip = on_chip[:cores]
    order = []
    for cy in range(chips[0]):
        cx_range = range(chips[1])
        for cx in (cx_range if cy % 2 == 0 else reversed(cx_range)):
            order += [(cy * rows + r, cx * cols + c) for r, c in on_chip]
    return order


def first_slots(layer_cores: list[int], per_chip: int, chips: int) -> list[int]:
    """Where each layer's cores start in placement order (layers in order, consecutive cores): a
    layer moves on to the next chip's first core when it then spans fewer chips, unless that leaves
    the system too few cores for the network (then every layer follows the one before)."""
    slots, cursor = [], 0
    for count in layer_cores:
        offset = cursor % per_chip
        if offset and -(-count // per_chip) < -(-(offset + count) // per_chip):
            cursor += per_chip - offset
        slots.append(cursor)
        cursor += count
    if cursor > per_chip * chips:
        return [sum(layer_cores[:index]) for index in range(len(layer_cores))]
    return slots


def hops(a, b, tile) -> tuple[int, int]:
    """(east-west, north-south) tile hops between two core positions under XY routing."""
    return abs(a[1] // tile[1] - b[1] // tile[1]), abs(a[0] // tile[0] - b[0] // tile[0])


# -------------------------------------------------------------------------------- mapping

@dataclass
class Mapping:
    """Where every neuron lives; serializable with `to_dict` (mapping.json)."""

    network: str
    target: str
    mesh: tuple[int, int]                 # one chip's cores
    chips: tuple[int, int]                # the system's chip grid ((1, 1): one chip)
    tile: tuple[int, int]
    packing: dict
    limits: dict
    input_port: tuple[int, int]
    layers: list[dict]
    cores: list[dict]
    totals: dict

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "network": self.network,
                "target": self.target, "mesh": list(self.mesh), "chips": list(self.chips), "tile": list(self.tile),
                "packing": self.packing, "limits": self.limits,
                "input_port": {"position": list(self.input_port),
                               "tile": [self.input_port[0] // self.tile[0], self.input_port[1] // self.tile[1]]},
                "layers": self.layers, "cores": self.cores, "totals": self.totals}

    @classmethod
    def from_dict(cls, doc) -> "Mapping":
        """The mapping of a mapping.json (InputError when it is not one); `to_dict`'s inverse."""
        try:
            if doc["format"] != FORMAT or doc["format_version"] != FORMAT_VERSION:
                raise InputError(f"not an {FORMAT} version {FORMAT_VERSION}")
            mapping = cls(network=str(doc["network"]), target=str(doc["target"]),
                          mesh=tuple(int(v) for v in doc["mesh"]), chips=tuple(int(v) for v in doc["chips"]),
                          tile=tuple(int(v) for v in doc["tile"]),
                          packing=dict(doc["packing"]), limits=dict(doc["limits"]),
                          input_port=tuple(int(v) for v in doc["input_port"]["position"]),
                          layers=list(doc["layers"]), cores=list(doc["cores"]), totals=dict(doc["totals"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"malformed mapping ({type(error).__name__}: {error})")
        if len(mapping.mesh) != 2 or len(mapping.chips) != 2 or len(mapping.tile) != 2 or len(mapping.input_port) != 2:
            raise InputError("malformed mapping (mesh, chips, tile and input port are 2-D)")
        return mapping

    def layer(self, name: str) -> dict:
        for entry in self.layers:
            if entry["name"] == name:
                return entry
        raise KeyError(name)

    def partition(self, name: str) -> Partition:
        entry = self.layer(name)["partition"]
        return Partition(entry["channel_group"], tuple(entry["tile"]))


def map_to_cores(net: Network, target, partitions: dict[str, Partition] | None = None) -> Mapping:
    """Partition every neuron layer onto cores under `target.limits` and place the cores on the mesh.

    `partitions` fixes chosen layers' partitions (for tests and experiments); the others are searched.
    Raises DesignRuleError naming the layer, the limit and the numbers when the network does not fit.
    """
    limits = dict(target.limits)
    packing = _Packing(target)
    check_delays(net, target)
    check_graded_spikes(net, target)
    layers, parts = partition_network(net, target, fixed=partitions)
    tile = tile_shape(target)
    mesh = (int(limits["mesh"][0]), int(limits["mesh"][1]))
    chips = target.chip_grid
    per_chip = min(int(limits["cores"]), mesh[0] * mesh[1])
    positions = core_positions(mesh, tile, per_chip, chips)
    available = len(positions)
    mapped = [name for name, layer in layers.items() if layer.op != "input"]
    layer_cores = [parts[name].cores(layers[name].C, layers[name].H, layers[name].W) for name in mapped]
    slots = first_slots(layer_cores, per_chip, chips[0] * chips[1])
    needed = slots[-1] + layer_cores[-1]
    if needed > available:
        largest = sorted(zip((-count for count in layer_cores), mapped))[:3]
        names = ", ".join(f"'{name}' {-count}" for count, name in largest)
        needs, has = f"{needed} cores", f"{available}"
        if chips != (1, 1):
            needs += f" ({-(-needed // per_chip)} chips of {per_chip} as placed)"
            has += f" on {chips[0] * chips[1]} chips"
        raise DesignRuleError(f"network '{net.name}': needs {needs}, the target has {has} (largest layers: {names})")
    first_slot = dict(zip(mapped, slots))
    layer_entries, core_entries = [], []
    for name, layer in layers.items():
        if layer.op == "input":
            continue
        part = parts[name]
        fan_out = _FanOut(layer, layers, parts) if layer.consumers else None
        stats = _tile_stats(layer, part.tile, _mults(layer, layers, parts))
        out_per_channel = fan_out.per_channel(stats.tiles) if fan_out else np.zeros(len(stats.tiles), np.int64)
        syn_per_channel = _synapses(layer, stats)
        first = len(core_entries)
        slot = first_slot[name] - first     # a core's placement slot: its id + slot
        for t, (y0, y1, x0, x1) in enumerate(stats.tiles):
            for c0, c1 in part.channel_ranges(layer.C):
                g = c1 - c0
                memory = int(_memory_bits(layer, stats, g, packing)[t])
                core_entries.append({
                    "id": len(core_entries), "layer": name, "channels": [c0, c1], "rows": [y0, y1],
                    "cols": [x0, x1], "neurons": int(g * stats.positions[t]),
                    "synapses": int(g * syn_per_channel[t]), "memory_bits": memory,
                    "fan_in": int(stats.fan_in[t]), "fan_out": int(g * out_per_channel[t]),
                    "slot": len(core_entries) + slot})
        mine = core_entries[first:]
        if layer.recurrent is not None:
            own = _recurrent(layer, part, packing)
            for index, core in enumerate(mine):
                for key, added in (("synapses", own.synapses), ("memory_bits", own.memory),
                                   ("fan_in", own.fan_in), ("fan_out", own.fan_out)):
                    core[key] += int(added[index])
        for key, limit in (("neurons", "neurons_per_core"), ("fan_in", "fan_in_axons_per_core"),
                           ("memory_bits", "synaptic_memory_bits_per_core"), ("fan_out", "fan_out_per_core")):
            worst = max(core[key] for core in mine)
            if worst > limits[limit]:   # only reachable with partitions given by the caller
                raise DesignRuleError(f"layer '{name}': a core needs {key.replace('_', '-')} {worst}, "
                                      f"above the target's {limits[limit]} per core")
        layer_entries.append({
            "name": name, "op": layer.op, "shape": list(layer.shape), "depth": layer.depth,
            "partition": {"channel_group": part.group, "tile": list(part.tile), "block": list(layer.block)},
            "first_core": first, "cores": len(mine),
            "chips": len({(first_slot[name] + index) // per_chip for index in range(len(mine))}),
            "neurons": sum(c["neurons"] for c in mine), "synapses": sum(c["synapses"] for c in mine),
            "memory_bits": sum(c["memory_bits"] for c in mine),
            "max_fan_in": max(c["fan_in"] for c in mine), "max_fan_out": max(c["fan_out"] for c in mine),
            "recurrent_synapses": 0 if layer.recurrent is None else int(layer.recurrent.nnz),
            "spike_payload_bits": payload_bits(net.node(name), net),
            "inputs": [{"tensor": g.tensor, "synapses": g.synapses, "kind": g.kind, "delay_bits": g.delay_bits,
                        "sources": [{"layer": src, "pool": list(block)} for src, block in g.sources]}
                       for g in layer.groups]})
    used = len(core_entries)
    for core in core_entries:
        r, c = positions[core.pop("slot")]
        core["position"] = [r, c]
        core["chip"] = [r // mesh[0], c // mesh[1]]
        core["tile"] = [r // tile[0], c // tile[1]]
    tiles_used = len({tuple(core["tile"]) for core in core_entries})
    neurons = sum(core["neurons"] for core in core_entries)
    memory = sum(core["memory_bits"] for core in core_entries)
    totals = {
        "cores_used": used, "cores_available": available, "tiles_used": tiles_used,
        "chips_used": len({tuple(core["chip"]) for core in core_entries}), "chips_available": chips[0] * chips[1],
        "neurons": neurons, "synapses": sum(core["synapses"] for core in core_entries),
        "memory_bits": memory,
        "utilisation": {
            "cores": used / available,
            "neurons": neurons / (used * limits["neurons_per_core"]),
            "memory": memory / (used * limits["synaptic_memory_bits_per_core"]),
            "fan_in": sum(core["fan_in"] for core in core_entries) / (used * limits["fan_in_axons_per_core"]),
        },
    }
    return Mapping(network=net.name, target=target.name, mesh=mesh, chips=chips, tile=tile, packing=packing.describe(),
                   limits={k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in limits.items()},
                   input_port=positions[0], layers=layer_entries, cores=core_entries, totals=totals)


# ----------------------------------------------------------------------------- reporting

def format_mapping(mapping: Mapping) -> str:
    """A short table for `snnc inspect`: one line per layer, then the totals."""
    limits = mapping.limits
    head = f"{'layer':<24} {'shape':<14} {'depth':>5} {'cores':>5} {'chips':>5} {'neurons':>8} {'synapses':>10} " \
           f"{'fan-in':>7} {'fan-out':>7} {'memory':>7}"
    system = "" if tuple(mapping.chips) == (1, 1) else f"{mapping.chips[0]}x{mapping.chips[1]} chips, each "
    lines = [f"core mapping on {mapping.target}: {system}mesh {mapping.mesh[0]}x{mapping.mesh[1]} cores, "
             f"tiles of {mapping.tile[0]}x{mapping.tile[1]}, {mapping.packing['bits_per_synapse']} bits per synapse",
             head, "-" * len(head)]
    for entry in mapping.layers:
        cores = [c for c in mapping.cores if c["layer"] == entry["name"]]
        memory = max(c["memory_bits"] for c in cores) / limits["synaptic_memory_bits_per_core"]
        shape = "x".join(str(v) for v in entry["shape"])
        lines.append(f"{entry['name']:<24} {shape:<14} {entry['depth']:>5} {entry['cores']:>5} {entry['chips']:>5} "
                     f"{entry['neurons']:>8} {entry['synapses']:>10} {entry['max_fan_in']:>7} "
                     f"{entry['max_fan_out']:>7} {memory:>6.0%}")
    t = mapping.totals
    lines.append("-" * len(head))
    lines.append(f"{t['cores_used']} of {t['cores_available']} cores in {t['tiles_used']} tiles on {t['chips_used']} of "
                 f"{t['chips_available']} chips; "
                 f"neurons {t['utilisation']['neurons']:.0%}, synaptic memory {t['utilisation']['memory']:.0%} "
                 f"of the cores used (fan-in, fan-out, memory: worst core per layer)")
    return "\n".join(lines)


MAPPING_FILE = "mapping.json"


@artifact_writer("core mapping", order=10)
def write_artifacts(compiled, directory: Path, options: dict) -> list[str]:
    """Export writer (first, so that a network that does not fit fails before the rest): mapping.json for compiled.fixed on compiled.target (deterministic bytes)."""
    mapping = map_to_cores(compiled.fixed, compiled.target)
    path = Path(directory) / MAPPING_FILE
    path.write_text(json.dumps(mapping.to_dict(), indent=1, sort_keys=True) + "\n")
    return [MAPPING_FILE]


def load_mapping(export) -> Mapping:
    """The mapping an export directory ships, as written."""
    try:
        return Mapping.from_dict(export.read_json(MAPPING_FILE))
    except InputError as error:
        raise InputError(f"{export.root}/{MAPPING_FILE}: {error}")
