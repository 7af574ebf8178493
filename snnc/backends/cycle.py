"""Cycle-level multicore simulator: a fixed-point network on a target's mapped cores, step by step.

Per chip time step (docs/cycle-simulator.md):
1. neuron update: every layer whose pipeline window covers the step (a layer at synaptic depth d
   computes logical step t at chip step t + d) applies the fixed-point rule of snnc.fixedpoint
   (compiled in snnc.execute.FixedNeuron, which the reference runs too) to the input accumulated for it;
2. spike routing: the spikes just produced (and the host's input at steps 0..T-1) go out as one
   message per (axon, destination core), XY-routed over the tile mesh; hops are counted, and on a
   system of several chips the chip-to-chip links each message crosses;
3. synaptic accumulation: each message costs its destination core one synaptic op per synapse of
   its axon there, into the accumulator slot of the step its layer will integrate it (later by
   the axon's delay; the next step for a population's recurrent spikes onto itself);
4. barrier synchronisation.
The only recurrence is a population onto itself (FixedNeuron steps it, as in the reference), so
every quantity of a step is computed layer by layer over all T steps at once (then route by
route), vectorized over the batch, and the chip's T + L steps are put together from the per-step
counts at the end. The functional result is exact integer arithmetic and
equals the integer reference spike for spike; the cores decide what is counted and the time model.
Traces come back in logical time (T steps), as every backend's do.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numba
import numpy as np
import scipy.sparse
import torch

from snnc import execute
from snnc.data import InputSet
from snnc.errors import InputError
from snnc.ir import Network, Node
from snnc.passes.mapping import (Mapping, Partition, analyse, load_mapping, map_to_cores, recurrent_synapses,
                                 segments, tile_reach)

NAME = "cycle"
SENDER_BLOCK = 64   # senders whose routing tables are formed at once (a [block, cores, 5] array)
COUNT_KEYS = ("synaptic_op", "neuron_update_active", "neuron_update_inactive", "spikes", "messages",
              "spike_within_tile", "spike_across_tiles", "hop_east_west", "hop_north_south",
              "spike_across_chips", "hop_chip")
ENERGY_KEYS = ("synaptic_op", "neuron_update_active", "neuron_update_inactive", "spike_within_tile",
               "hop_east_west", "hop_north_south", "hop_chip")
# what one message costs, the columns of every routing table: messages, within its tile, tile hops
# east-west and north-south, chip-to-chip link crossings, across chips (0/1), serial routing time
COSTS = 7
LATENCY = COSTS - 1


# ------------------------------------------------------------------------------- the plan

def _pre_flatten_name(net: Network, name: str) -> str:
    node = net.node(name)
    while node.op == "flatten":
        node = net.node(node.inputs[0])
    return node.name


def _sum_pool(x: torch.Tensor, kernel: int, dtype: torch.dtype, binary: bool = False) -> torch.Tensor:
    """Sum pooling with stride == kernel, as `dtype`. On integer values it gives the numbers of
    execute.synaptic_op's avg_pool2d(divisor_override=1) (integer sums are order-free), several
    times faster on CPU; `binary` uint8 input (0/1 spikes, not counts) is pooled two at a time."""
    B, C, H, W = x.shape
    out = torch.empty((B, C, H // kernel, W // kernel), dtype=dtype)
    x = x.contiguous().numpy()
    if binary and kernel == 2 and x.dtype == np.uint8 and W % 2 == 0:
        _pool_spike_pairs_into(x.view(np.uint16), out.numpy())
    else:
        _sum_pool_into(x, kernel, out.numpy())
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _sum_pool_into(x, kernel, out):
    for b in numba.prange(x.shape[0]):
        for c in range(out.shape[1]):
            for y in range(out.shape[2]):
                for i in range(out.shape[3]):
                    total = 0.0
                    for dy in range(kernel):
                        for dx in range(kernel):
                            total += x[b, c, y * kernel + dy, i * kernel + dx]
                    out[b, c, y, i] = total


@numba.njit(parallel=True, cache=True, nogil=True)
def _pool_spike_pairs_into(pairs, out):
    """2x2 sum pooling of 0/1 spikes read as uint16 words, each two horizontally adjacent spikes: the
    words of two rows are added (each byte stays <= 2, so no carry) and the word's bytes summed."""
    for b in numba.prange(pairs.shape[0]):
        for c in range(out.shape[1]):
            for y in range(out.shape[2]):
                top, bottom, pooled = pairs[b, c, 2 * y], pairs[b, c, 2 * y + 1], out[b, c, y]
                for i in range(out.shape[3]):
                    word = top[i] + bottom[i]
                    pooled[i] = (word & 255) + (word >> 8)


@dataclass
class _Synapse:
    node: Node
    weight: torch.Tensor
    dtype: torch.dtype                    # float32 where every partial sum is an integer below 2^24


@dataclass
class _Route:
    """Counting data for the spikes of one source population into one synapse group of a layer."""

    dest: str
    source: str
    source_shape: tuple[int, int, int]    # the source population as (C, H, W)
    shape: tuple[int, int, int]           # X before flatten (C, hx, wx)
    rows: torch.Tensor | None             # [row segments, H_src] (None: identity)
    cols: torch.Tensor | None             # [col segments, W_src]
    pooled: str | None                    # a tensor whose values are the cells (one sender per block)
    channels_per_sender: int              # cells of `channels_per_sender` channels share a sender
    # per class (channel group, spatial cell), [classes, ...]: everything one message costs
    class_totals: torch.Tensor            # [classes, LATENCY]: the COSTS columns but the time
    class_sender: torch.Tensor            # [classes]: global index of the sending core (host = last)
    class_latency: torch.Tensor           # [classes]: serial routing time of one message of the class
    class_messages: torch.Tensor          # [classes]: messages (one per destination core reached)
    class_reach: object                   # scipy CSR [classes, dest positions]: synapses (None: dest always active)
    class_tiles: torch.Tensor             # [classes, dest tiles]: synapses per destination channel
    cell_delays: list[Node]               # per delayed synapse of the group, a node with the delay of each cell


@dataclass
class _RecurrentRoute:
    """Counting data for a layer's spikes into its own neurons (one class per source neuron)."""

    sender: torch.Tensor                  # [neurons]: global index of the neuron's core
    class_totals: torch.Tensor            # [neurons, LATENCY]: the COSTS columns but the time, per spike
    class_latency: torch.Tensor           # [neurons]: serial routing time of one spike's messages
    class_messages: torch.Tensor          # [neurons]: messages per spike
    synapses: torch.Tensor                # [neurons, the layer's cores]: synapses of the neuron on each
    reach: object                         # scipy CSR [source neurons, target neurons] (None: always active)


@dataclass
class _Layer:
    name: str
    node: Node
    depth: int
    C: int
    H: int
    W: int
    first: int
    cores: int
    part: Partition
    synapses: list[_Synapse]
    core_of_neuron: torch.Tensor          # [C*H*W] global core index
    tile_core: torch.Tensor               # [tiles, channel groups] global core index
    group_sizes: torch.Tensor             # [tiles, channel groups] channels held
    bias_nonzero: torch.Tensor            # [C*H*W] bool
    always_active: bool                   # every neuron has a bias: all active in the window
    core_neurons: torch.Tensor            # [cores] neurons on each of its cores


class _Plan:
    """Everything the simulator precomputes from (network, mapping, target)."""

    def __init__(self, net: Network, mapping: Mapping, target):
        self.net, self.target, self.mapping = net, target, mapping
        self.time = target.time_ns
        self.tile = tuple(mapping.tile)
        layers = analyse(net)
        self.input_name = net.input_node.name
        mapped = [entry["name"] for entry in mapping.layers]
        if mapped != [name for name in layers if name != self.input_name] or any(
                tuple(mapping.layer(name)["shape"]) != tuple(layers[name].shape) for name in mapped):
            raise InputError(f"the mapping of '{mapping.network}' does not describe network '{net.name}'")
        parts = {name: mapping.partition(name) for name in mapped}
        self.n_cores = len(mapping.cores)
        self.host = self.n_cores                 # index of the input port among the senders
        positions = np.array([c["position"] for c in mapping.cores] + [list(mapping.input_port)], np.int64)
        self.positions = positions
        tiles = positions // np.array(self.tile)
        self.chip_of = positions // np.array(mapping.mesh)    # [cores + host]: (chip row, chip column)
        self.core_neurons = torch.tensor([c["neurons"] for c in mapping.cores], dtype=torch.float64)
        self.max_depth = max(layer.depth for layer in layers.values())
        exact = execute.float32_ops(net)   # the reference's own choice, so that sums agree exactly
        self.fast_pools = {node.name for node in net.nodes if node.op == "sumpool"
                           and node.attrs["kernel"] == node.attrs["stride"]
                           and execute.integer_valued(net, node.inputs[0])}
        self.layers: dict[str, _Layer] = {}
        for name, info in layers.items():
            if name == self.input_name:
                continue
            node, part, entry = net.node(name), parts[name], mapping.layer(name)
            synapses = []
            for group in info.groups:
                for syn_name in group.synapses:
                    syn = net.node(syn_name)
                    dtype = torch.float32 if syn_name in exact else torch.float64
                    weight = torch.from_numpy(np.asarray(syn.weight, dtype=np.float64)).to(dtype)
                    synapses.append(_Synapse(syn, weight, dtype))
            tiles_list = part.tiles(info.H, info.W)
            ranges = part.channel_ranges(info.C)
            tile_core = torch.arange(entry["first_core"], entry["first_core"] + entry["cores"])
            tile_core = tile_core.reshape(len(tiles_list), len(ranges))
            group_sizes = torch.tensor([[c1 - c0 for c0, c1 in ranges]] * len(tiles_list), dtype=torch.float64)
            core_map = np.zeros((info.C, info.H, info.W), np.int64)
            for t, (y0, y1, x0, x1) in enumerate(tiles_list):
                for g, (c0, c1) in enumerate(ranges):
                    core_map[c0:c1, y0:y1, x0:x1] = int(tile_core[t, g])
            bias = np.broadcast_to(np.asarray(node.neuron.bias), node.shape).reshape(-1) != 0
            self.layers[name] = _Layer(name, node, info.depth, info.C, info.H, info.W, entry["first_core"],
                                       entry["cores"], part, synapses, torch.from_numpy(core_map.reshape(-1)),
                                       tile_core, group_sizes, torch.from_numpy(bias.copy()), bool(bias.all()),
                                       self.core_neurons[entry["first_core"]:entry["first_core"] + entry["cores"]])
        self.rules = {name: execute.fixed_neuron(layer.node, net.arithmetic)
                      for name, layer in self.layers.items()}   # stateless: shared by every chunk
        # routes: (source, destination group) pairs with their per-class counting tables
        self.routes_out: dict[str, list[_Route]] = {name: [] for name in layers}
        for name, info in layers.items():
            if name == self.input_name:
                continue
            dest = self.layers[name]
            for group in info.groups:
                for src, block in group.sources:
                    self.routes_out[src].append(self._route(dest, info, group, src, block, layers, parts, tiles))
        self.recurrent = {name: self._recurrent_route(layer, tiles) for name, layer in self.layers.items()
                          if layer.node.recurrent is not None}
        # per layer (in order), the tensors read directly from then on: a chunk drops the others
        reads = [{syn.node.inputs[0] for syn in layer.synapses} | {route.pooled or route.source
                                                                   for route in self.routes_out[name]}
                 for name, layer in self.layers.items()]
        self.keep_after = [set().union(*reads[index + 1:]) | {self.input_name} for index in range(len(reads))]
        n_tiles = len({tuple(t) for t in tiles[:-1].tolist()})
        chip_tiles = np.unique(np.concatenate([self.chip_of[:-1], tiles[:-1]], axis=1), axis=0)
        busiest = int(np.unique(chip_tiles[:, :2], axis=0, return_counts=True)[1].max())   # tiles on one chip
        mesh_tiles = (-(-mapping.mesh[0] // self.tile[0])) * (-(-mapping.mesh[1] // self.tile[1]))
        low, high = self.time["barrier_min"], self.time["barrier_max"]
        # on a chip: between its published extremes by the tiles in use; on a system of chips the
        # barrier also goes out to the farthest chip in use and back over the links
        self.barrier_ns = low + (high - low) * (busiest - 1) / max(1, mesh_tiles - 1)
        if tuple(mapping.chips) != (1, 1):
            farthest = int(np.abs(self.chip_of[:-1] - self.chip_of[-1]).sum(axis=1).max())
            self.barrier_ns += 2 * farthest * self.time["hop_chip"]
        self.tiles_used = n_tiles

    def _message_costs(self, senders: np.ndarray, tiles: np.ndarray) -> np.ndarray:
        """[senders, cores, COSTS]: what one message from each sender to each core costs."""
        t = self.time
        ew = np.abs(tiles[senders, 1][:, None] - tiles[None, :self.n_cores, 1]).astype(np.float64)
        ns = np.abs(tiles[senders, 0][:, None] - tiles[None, :self.n_cores, 0]).astype(np.float64)
        links = np.abs(self.chip_of[senders][:, None, :] - self.chip_of[None, :self.n_cores]).sum(axis=2)
        links = links.astype(np.float64)
        same = (ew == 0) & (ns == 0)
        latency = np.where(same, t["spike_within_tile"], ew * t["hop_east_west"] + ns * t["hop_north_south"])
        if links.any():
            latency = latency + links * t["hop_chip"]
        return np.stack([np.ones_like(ew), same, ew, ns, links, links > 0, latency], axis=2)

    def _recurrent_route(self, layer: _Layer, tiles: np.ndarray) -> _RecurrentRoute:
        """The counting tables of a layer's recurrent synapses: every neuron is an axon that sends
        one message per core holding one of its targets (docs/cycle-simulator.md)."""
        synapses = recurrent_synapses(layer.node)                 # [target i, source j]
        neurons, cores = synapses.shape[0], slice(layer.first, layer.first + layer.cores)
        core = layer.core_of_neuron.numpy()
        per_core = scipy.sparse.csr_matrix((np.ones(synapses.nnz), (synapses.col, core[synapses.row] - layer.first)),
                                           shape=(neurons, layer.cores))      # [j, layer core]: synapses
        reached = per_core.copy()
        reached.data[:] = 1
        table = np.zeros((neurons, COSTS))
        for sender in np.unique(core):
            mine = np.flatnonzero(core == sender)
            table[mine] = reached[mine] @ self._message_costs(np.array([sender]), tiles)[0, cores]
        return _RecurrentRoute(sender=torch.from_numpy(core), class_totals=torch.from_numpy(table[:, :LATENCY].copy()),
                               class_latency=torch.from_numpy(table[:, LATENCY].copy()),
                               class_messages=torch.from_numpy(table[:, 0].copy()),
                               synapses=torch.from_numpy(per_core.toarray()),
                               reach=None if layer.always_active else synapses.T.tocsr().astype(np.float64))

    def _route(self, dest, info, group, src, block, layers, parts, tiles) -> _Route:
        C, hx, wx = group.pre_shape
        source = layers[src]
        if src == self.input_name:
            src_part, src_first = Partition(source.C, (source.H, source.W)), None
        else:
            src_part, src_first = parts[src], self.layers[src].first
        row_segs = segments(source.H, src_part.tile[0], block[0], hx)
        col_segs = segments(source.W, src_part.tile[1], block[1], wx)
        identity = block == (1, 1) and len(row_segs) == source.H and len(col_segs) == source.W
        one_per_block = len(row_segs) == hx and len(col_segs) == wx
        pooled = _pre_flatten_name(self.net, group.tensor) if one_per_block and len(group.sources) == 1 else None
        rows = cols = None
        if not identity and pooled is None:
            rows = torch.zeros((len(row_segs), source.H), dtype=torch.float32)
            for i, (_, _, a, b) in enumerate(row_segs):
                rows[i, a:b] = 1
            cols = torch.zeros((len(col_segs), source.W), dtype=torch.float32)
            for j, (_, _, a, b) in enumerate(col_segs):
                cols[j, a:b] = 1
        r_index = np.array([s[0] for s in row_segs])
        c_index = np.array([s[0] for s in col_segs])
        cell_pos = (r_index[:, None] * wx + c_index[None, :]).ravel()
        # a delayed synapse's delays per cell (a cell is an X element or, split over senders, part of one)
        cell_delays = [Node(f"{syn.name}.cells", syn.op, [], (C, len(row_segs) * len(col_segs)),
                            delay=np.asarray(syn.delay).reshape(C, hx, wx)[:, r_index][:, :, c_index])
                       for syn in map(self.net.node, group.synapses) if syn.delayed]
        # destination cores reached by each X position
        r = tile_reach(group, info, dest.part.tile)
        n_tiles_d = dest.tile_core.shape[0]
        position_tiles = np.zeros((hx * wx, n_tiles_d))
        position_tiles[r.row, r.col] = r.data
        reached = np.zeros((hx * wx, self.n_cores), np.float64)
        for g in range(dest.tile_core.shape[1]):
            reached[r.row, dest.tile_core[r.col, g].numpy()] = 1
        # sending core of each cell (channel, row segment, col segment)
        if src_first is None:
            senders = np.full((C, len(row_segs), len(col_segs)), self.host, np.int64)
            channels_per_sender = C
        else:
            src_layer = self.layers[src]
            ntx = -(-source.W // src_part.tile[1])
            tile_of = np.array([s[1] for s in row_segs])[:, None] * ntx + np.array([s[1] for s in col_segs])[None, :]
            group_of = np.arange(C) // src_part.group
            senders = src_layer.tile_core.numpy()[tile_of[None, :, :], group_of[:, None, None]]
            channels_per_sender = src_part.group
        # per (sender, X position): messages, within-tile, hops and serial latency
        # (an X position reaches few cores: the sum over them is a sparse product, SENDER_BLOCK senders at once)
        unique_senders = np.unique(senders)
        reached = scipy.sparse.csr_matrix(reached)
        table = np.zeros((len(unique_senders), hx * wx, COSTS))
        for first in range(0, len(unique_senders), SENDER_BLOCK):
            block = unique_senders[first:first + SENDER_BLOCK]
            per_core = self._message_costs(block, tiles)                         # [block, cores, COSTS]
            sums = reached @ per_core.transpose(1, 0, 2).reshape(self.n_cores, -1)  # [positions, block * COSTS]
            table[first:first + len(block)] = sums.reshape(hx * wx, len(block), COSTS).transpose(1, 0, 2)
        # one class per (channel group, spatial cell): the same sender and the same X position
        which = np.searchsorted(unique_senders, senders[::channels_per_sender]).reshape(-1)   # [classes]
        position = np.broadcast_to(cell_pos, (len(which) // len(cell_pos), len(cell_pos))).reshape(-1)
        per_class = table[which, position]                                       # [classes, COSTS]
        return _Route(dest=dest.name, source=src, source_shape=(source.C, source.H, source.W),
                      shape=(C, hx, wx), rows=rows, cols=cols, pooled=pooled,
                      channels_per_sender=channels_per_sender,
                      class_totals=torch.from_numpy(per_class[:, :LATENCY].copy()),
                      class_sender=torch.from_numpy(unique_senders[which]),
                      class_latency=torch.from_numpy(per_class[:, LATENCY].copy()),
                      class_messages=torch.from_numpy(per_class[:, 0].copy()),
                      class_reach=None if dest.always_active else group.reach[position].astype(np.float64).tocsr(),
                      class_tiles=torch.from_numpy(position_tiles[position]), cell_delays=cell_delays)


@numba.njit(parallel=True, cache=True, nogil=True)
def _messages_per_class(cells, channels_per_sender):
    """Per sample, the non-zero cells (each one message) of [batch, channels, spatial cells] summed
    over each group of `channels_per_sender` channels: [batch, channel groups * spatial cells]."""
    batch, channels, spatial = cells.shape
    groups = -(-channels // channels_per_sender)
    counts = np.zeros((batch, groups, spatial))
    for b in numba.prange(batch):
        for g in range(groups):   # channel by channel within each group: no division per cell
            for c in range(g * channels_per_sender, min(channels, (g + 1) * channels_per_sender)):
                for i in range(spatial):
                    counts[b, g, i] += cells[b, c, i] != 0
    return counts.reshape(batch, groups * spatial)


@numba.njit(parallel=True, cache=True, nogil=True)
def _active_per_core(received, busy, bias_nonzero, own_input, core_of_neuron, cores):
    """Per (step x sample) row, the neurons of each of the layer's cores that update actively: input
    arrived at their position (received [rows, positions]; own_input [rows, neurons] from their own
    spikes, or empty), or their state or bias is non-zero (busy [rows, neurons], bias_nonzero).
    Neurons are in C order (channel c, position p: n = c * positions + p); core_of_neuron counts
    from the layer's first core."""
    rows, neurons = busy.shape
    positions = received.shape[1]
    own = own_input.shape[0] > 0
    counts = np.zeros((rows, cores))
    for r in numba.prange(rows):
        for c in range(neurons // positions):
            for p in range(positions):
                n = c * positions + p
                if received[r, p] != 0 or busy[r, n] != 0 or bias_nonzero[n] or (own and own_input[r, n]):
                    counts[r, core_of_neuron[n]] += 1.0
    return counts


# ------------------------------------------------------------------------------- counts

@dataclass
class Counts:
    """What the chip did: totals over the samples simulated, and the modelled time per sample.

    layers: per layer; synaptic ops and neuron updates belong to the receiving layer, spikes,
    messages and hops to the sending one ('input' for the host's graded input messages).
    cores: per core index (mapping order) synaptic_op, neuron_update_active/inactive, messages_sent.
    step_ns: [chip steps, samples] modelled duration of every chip step; latency_ns: [samples].
    """

    samples: int
    steps: int
    layers: dict
    cores: dict
    step_ns: np.ndarray
    phase_ns: dict
    barrier_ns: float
    tiles_used: int

    @property
    def latency_ns(self) -> np.ndarray:
        return self.step_ns.sum(axis=0)

    def to_dict(self) -> dict:
        n = max(1, self.samples)
        latency = self.latency_ns
        return {
            "samples": self.samples, "chip_steps_per_sample": self.steps,
            "per_sample": {name: {k: v / n for k, v in counts.items()} for name, counts in self.layers.items()},
            "totals": self.layers,
            "cores": {k: [float(x) for x in v] for k, v in self.cores.items()},
            "time": {
                "latency_ns_mean": float(latency.mean()) if latency.size else 0.0,
                "latency_ns_min": float(latency.min()) if latency.size else 0.0,
                "latency_ns_max": float(latency.max()) if latency.size else 0.0,
                "samples_per_second": float(1e9 / latency.mean()) if latency.size else 0.0,
                "step_ns_mean": [float(x) for x in self.step_ns.mean(axis=1)] if latency.size else [],
                "phase_ns_mean_per_sample": {k: float(v) / n for k, v in self.phase_ns.items()},
                "barrier_ns_per_step": self.barrier_ns, "tiles_used": self.tiles_used,
                "model": "per step: slowest core (synaptic ops x t_synop + neuron updates x t_update) "
                         "+ routing (the busiest sender's messages in series, chip-to-chip links included) "
                         "+ barrier",
            },
        }


def energy_counts(counts: Counts, per_sample: bool = True) -> dict:
    """Per layer, the event counts that multiply target.energy_pj (keys as in the target file)."""
    n = max(1, counts.samples) if per_sample else 1
    return {name: {key: layer[key] / n for key in ENERGY_KEYS} for name, layer in counts.layers.items()}


# ---------------------------------------------------------------------------- simulation

class _Run:
    """One batch chunk: each layer over all T steps in network order (a layer's feed-forward input
    at every step is known once its sources have run; its own recurrent input is added step by
    step by FixedNeuron), and each route's messages at every step; then the chip's T + L steps put
    together from the per-step counts."""

    def __init__(self, plan: _Plan, inputs: np.ndarray, record_voltages):
        self.plan, self.net = plan, plan.net
        self.T, self.B = inputs.shape[:2]
        inputs = torch.from_numpy(np.ascontiguousarray(inputs)).to(torch.float32)
        if bool((inputs == inputs[:1]).all()):   # a static input: one step of it stands for all T
            inputs = inputs[:1]
        # tensor name -> (steps it holds: 1 when it depends on a static input alone, or T; [steps * B, ...])
        self.values: dict[str, tuple[int, torch.Tensor]] = {plan.input_name: (len(inputs), inputs.flatten(0, 1))}
        self.spikes: dict[str, torch.Tensor] = {}        # spiking layer -> [T, B, *shape] (execute.Trace's)
        self.readout_steps = None
        self.record = set(record_voltages)
        self.voltages, self.currents, self.overflow = {}, {}, {}
        self.received = {name: torch.zeros((self.T, self.B, layer.H * layer.W))
                         for name, layer in plan.layers.items() if not layer.always_active}
        K, n_cores = self.T + plan.max_depth, plan.n_cores
        self.core_synops = torch.zeros((K, self.B, n_cores), dtype=torch.float64)
        self.core_active = torch.zeros((K, self.B, n_cores), dtype=torch.float64)
        self.sender_latency = torch.zeros((K, self.B, n_cores + 1), dtype=torch.float64)
        self.messages_sent = torch.zeros(n_cores + 1, dtype=torch.float64)
        self.layer_counts = {name: dict.fromkeys(COUNT_KEYS, 0.0) for name in list(plan.layers) + [plan.input_name]}

    def value(self, name: str) -> tuple[int, torch.Tensor]:
        """A tensor on a synaptic path as the reference computes it (snnc.execute.synaptic_op), merged
        over (steps, batch)."""
        if name not in self.values:
            node, plan = self.net.node(name), self.plan
            if name in self.spikes:   # 0/1 spikes (or counts) as float32, made when first read
                steps, out = self.T, self.spikes[name].flatten(0, 1).to(torch.float32)
            elif name in plan.fast_pools and node.inputs[0] in self.spikes:   # spikes (or counts) pooled as uint8
                source = node.inputs[0]
                steps, out = self.T, _sum_pool(self.spikes[source].flatten(0, 1), node.attrs["kernel"],
                                               torch.float32, binary=not self.net.node(source).neuron.graded)
            elif name in plan.fast_pools:
                steps, source = self.value(node.inputs[0])
                out = _sum_pool(source, node.attrs["kernel"], source.dtype)
            else:
                sources = [self.value(i) for i in node.inputs]
                steps = max(s for s, _ in sources)
                out = execute.synaptic_op(node, [self._over_steps(s, x, steps) for s, x in sources], with_bias=False)
            self.values[name] = (steps, out)
        return self.values[name]

    def _over_steps(self, steps: int, x: torch.Tensor, wanted: int) -> torch.Tensor:
        """[steps * B, ...] values as [wanted * B, ...] (a static value repeated at every step)."""
        if steps == wanted:
            return x
        return x.unsqueeze(0).expand((wanted,) + x.shape).flatten(0, 1)

    def delayed(self, node: Node, steps: int, x: torch.Tensor) -> torch.Tensor:
        """[steps * B, ...] values as the T steps [T * B, ...] that `node`'s axonal delays make of
        them (execute.delayed_input, the reference's own; the delay slots of the destination
        neurons, docs/cycle-simulator.md)."""
        return execute.delayed_input(node, x.reshape((steps, self.B) + x.shape[1:]), self.T).flatten(0, 1)

    def synaptic_input(self, layer: _Layer) -> tuple[int, torch.Tensor]:
        """The integer input of a layer's neurons at every step, as the reference computes it: exact
        integer sums (float32 where every partial sum is an integer below 2^24, float64 otherwise),
        once for all steps when it depends on a static input alone (and has no delays)."""
        sums = []
        for syn in layer.synapses:
            steps, x = self.value(syn.node.inputs[0])
            if syn.node.delayed:
                steps, x = self.T, self.delayed(syn.node, steps, x)
            x = x.to(syn.dtype)
            if syn.node.op == "conv2d":
                z = execute.conv2d(syn.node, x, syn.weight)
            else:
                z = x @ syn.weight.T
            sums.append((steps, z))
        if len(sums) == 1:
            steps, total = sums[0]
            return steps, (total.round() if total.dtype == torch.float64 else total)
        steps = max(s for s, _ in sums)   # several: summed in float64, in place
        total = self._over_steps(sums[0][0], sums[0][1], steps).to(torch.float64, copy=True)
        for s, z in sums[1:]:
            total += self._over_steps(s, z, steps)
        # float32 sums are exact integers already; a float64 op's may need rounding
        return steps, (total.round_() if any(syn.dtype == torch.float64 for syn in layer.synapses) else total)

    def run_layer(self, name: str, layer: _Layer):
        steps, a = self.synaptic_input(layer)
        result = self.plan.rules[name].run(a.reshape((steps, self.B) + a.shape[1:]), self.T,
                                           record_voltage=name in self.record, record_busy=not layer.always_active)
        self.overflow[name] = result.overflow
        if result.voltages is not None:
            self.voltages[name] = result.voltages
            self.currents[name] = result.currents
        if layer.node.spiking:
            self.spikes[name] = result.outputs
            self.layer_counts[name]["spikes"] = float(result.spike_count)
        else:
            self.readout_steps = result.outputs
        own = self.route_recurrent(name, layer, result.outputs) if name in self.plan.recurrent else None
        window = slice(layer.depth, layer.depth + self.T)          # the chip steps of logical steps 0..T-1
        cores = slice(layer.first, layer.first + layer.cores)
        if layer.always_active:
            self.core_active[window, :, cores] += layer.core_neurons
        else:   # active: input arrived (its own spikes of the step before included), or state or bias non-zero
            received = self.received[name].reshape(self.T * self.B, -1).numpy()
            own_input = (own.reshape(self.T * self.B, -1).numpy() if own is not None
                         else np.zeros((0, 0), dtype=np.bool_))
            per_core = _active_per_core(received, result.busy.reshape(self.T * self.B, -1).numpy(),
                                        layer.bias_nonzero.numpy(), own_input,
                                        layer.core_of_neuron.numpy() - layer.first, layer.cores)
            self.core_active[window, :, cores] += torch.from_numpy(per_core).reshape(self.T, self.B, -1)

    def _add_messages(self, source: str, totals: list[float]) -> None:
        """A sender's message counts from its totals of the COSTS columns but the time."""
        counts = self.layer_counts[source]
        counts["messages"] += totals[0]
        counts["spike_within_tile"] += totals[1]
        counts["spike_across_tiles"] += totals[0] - totals[1]
        counts["hop_east_west"] += totals[2]
        counts["hop_north_south"] += totals[3]
        counts["hop_chip"] += totals[4]
        counts["spike_across_chips"] += totals[5]

    def route_recurrent(self, name: str, layer: _Layer, spikes: torch.Tensor) -> Optional[torch.Tensor]:
        """A layer's spikes into its own neurons: messages, hops, routing time and synaptic ops at
        the chip steps they are sent (like any route's); returns which neurons receive input for
        each logical step (the step after the spike), or None for a layer that is always active."""
        route = self.plan.recurrent[name]
        fired = (spikes != 0).reshape(self.T, self.B, -1).to(torch.float64)   # one message per count
        per_neuron = fired.sum((0, 1))
        self._add_messages(name, (per_neuron @ route.class_totals).tolist())
        window = slice(layer.depth, layer.depth + self.T)
        self.sender_latency[window].index_add_(2, route.sender, fired * route.class_latency)
        self.messages_sent.index_add_(0, route.sender, per_neuron * route.class_messages)
        self.core_synops[window, :, layer.first:layer.first + layer.cores] += fired @ route.synapses
        if route.reach is None:
            return None
        reached = (route.reach.T @ fired.reshape(self.T * self.B, -1).numpy().T).T.reshape(self.T, self.B, -1)
        received = torch.zeros(reached.shape, dtype=torch.bool)
        received[1:] = torch.from_numpy(reached[:-1] > 0)
        return received

    @staticmethod
    def _per_class(route: _Route, cells: torch.Tensor) -> torch.Tensor:
        """Messages per class [N, classes] from a route's cells [N, channels, spatial cells]."""
        if route.channels_per_sender == 1:   # every cell its own message
            return (cells != 0).flatten(1).to(torch.float64)
        return torch.from_numpy(_messages_per_class(cells.contiguous().numpy(), route.channels_per_sender))

    def route(self, route: _Route, depth: int):
        """The messages along one route at every step: hops and counts, routing time per sender,
        synaptic ops on the destination cores, and which destination neurons receive input."""
        if route.pooled is not None:       # the pooled tensor itself: one sender per value
            steps, cells = self.value(route.pooled)
        else:
            steps, cells = self.value(route.source)
            if route.rows is not None:     # partial sums of blocks split over senders
                cells = cells.reshape((len(cells),) + route.source_shape)
                cells = torch.matmul(torch.matmul(route.rows, cells), route.cols.T)
        cells = cells.reshape(steps * self.B, route.shape[0], -1)
        per_class = self._over_steps(steps, self._per_class(route, cells), self.T).reshape(self.T, self.B, -1)
        total_per_class = per_class.sum((0, 1))
        self._add_messages(route.source, (total_per_class @ route.class_totals).tolist())
        window = slice(depth, depth + self.T)
        self.sender_latency[window].index_add_(2, route.class_sender, per_class * route.class_latency)
        self.messages_sent.index_add_(0, route.class_sender, total_per_class * route.class_messages)
        dest = self.plan.layers[route.dest]
        if not dest.always_active:   # received for the logical step it is integrated at: its own, or after its delay
            arriving = [per_class] if not route.cell_delays else [
                self._per_class(route, self.delayed(delays, steps, cells)).reshape(self.T, self.B, -1)
                for delays in route.cell_delays]
            for classes in arriving:
                reached = route.class_reach.T @ classes.reshape(self.T * self.B, -1).numpy().T
                self.received[route.dest] += torch.from_numpy(reached.T.reshape(self.T, self.B, -1)).to(torch.float32)
        synops = (per_class @ route.class_tiles)[..., None] * dest.group_sizes   # [T, B, tiles, groups]
        self.core_synops[window].index_add_(2, dest.tile_core.reshape(-1), synops.reshape(self.T, self.B, -1))

    def run(self):
        plan = self.plan
        steps, pixels = self.values[plan.input_name]
        self.layer_counts[plan.input_name]["spikes"] = float(torch.count_nonzero(pixels)) * self.T / steps
        for route in plan.routes_out[plan.input_name]:   # graded input events: pixels with a non-zero payload
            self.route(route, 0)
        for index, (name, layer) in enumerate(plan.layers.items()):
            self.run_layer(name, layer)
            for route in plan.routes_out[name]:
                self.route(route, layer.depth)
            for done in set(self.values) - plan.keep_after[index]:   # a dropped value is remade if read
                del self.values[done]
            self.received.pop(name, None)
        return self

    def chip_steps(self) -> dict:
        """Per chip step and sample the modelled time: the slowest core (synaptic ops and neuron
        updates), the busiest sender's messages in series, and the barrier."""
        plan, t = self.plan, self.plan.time
        inactive = plan.core_neurons - self.core_active
        compute = (self.core_synops * t["synaptic_op"] + self.core_active * t["neuron_update_active"]
                   + inactive * t["neuron_update_inactive"]).max(dim=2).values
        routing = self.sender_latency.max(dim=2).values
        return {"step_ns": (compute + routing + plan.barrier_ns).numpy(),
                "phase": {"compute": float(compute.sum()), "routing": float(routing.sum()),
                          "barrier": plan.barrier_ns * compute.numel()},
                "cores": {"synaptic_op": self.core_synops.sum((0, 1)),
                          "neuron_update_active": self.core_active.sum((0, 1)),
                          "neuron_update_inactive": inactive.sum((0, 1)), "messages_sent": self.messages_sent}}


def _chunk_result(run: _Run) -> tuple[execute.Trace, Counts]:
    """What one chunk's run leaves: its trace and its counts (the run's working tensors go)."""
    plan = run.plan
    readout_steps = run.readout_steps.numpy()
    trace = execute.Trace(spikes={name: value.numpy() for name, value in run.spikes.items()},
                          readout_steps=readout_steps, readout=execute.readout(plan.net, readout_steps),
                          voltages={name: value.numpy() for name, value in run.voltages.items()},
                          overflow=run.overflow,
                          currents={name: value.numpy() for name, value in run.currents.items()})
    chip = run.chip_steps()
    cores = {key: value.numpy() for key, value in chip["cores"].items()}
    layers = {name: dict(counts) for name, counts in run.layer_counts.items()}
    for name, layer in plan.layers.items():     # a layer's receiving counts: the sum over its cores
        for key in ("synaptic_op", "neuron_update_active", "neuron_update_inactive"):
            layers[name][key] = float(cores[key][layer.first:layer.first + layer.cores].sum())
    cores["input_port_messages"] = cores["messages_sent"][plan.n_cores:].copy()
    cores["messages_sent"] = cores["messages_sent"][:plan.n_cores]
    counts = Counts(samples=run.B, steps=run.T + plan.max_depth, layers=layers, cores=cores,
                    step_ns=chip["step_ns"], phase_ns=chip["phase"], barrier_ns=plan.barrier_ns,
                    tiles_used=plan.tiles_used)
    return trace, counts


def combine_counts(parts: list[Counts]) -> Counts:
    """The counts of consecutive chunks as one (totals added, per-sample times side by side)."""
    first = parts[0]
    return Counts(samples=sum(p.samples for p in parts), steps=first.steps,
                  layers={name: {key: sum(p.layers[name][key] for p in parts) for key in COUNT_KEYS}
                          for name in first.layers},
                  cores={key: sum(p.cores[key] for p in parts) for key in first.cores},
                  step_ns=np.concatenate([p.step_ns for p in parts], axis=1),
                  phase_ns={key: sum(p.phase_ns[key] for p in parts) for key in first.phase_ns},
                  barrier_ns=first.barrier_ns, tiles_used=first.tiles_used)


def concatenate_traces(net: Network, parts: list[execute.Trace]) -> execute.Trace:
    """The traces of consecutive chunks as one."""
    if len(parts) == 1:
        return parts[0]
    readout_steps = np.concatenate([p.readout_steps for p in parts], axis=1)
    return execute.Trace(
        spikes={name: np.concatenate([p.spikes[name] for p in parts], axis=1) for name in parts[0].spikes},
        readout_steps=readout_steps, readout=execute.readout(net, readout_steps),
        voltages={name: np.concatenate([p.voltages[name] for p in parts], axis=1) for name in parts[0].voltages},
        overflow={name: {kind: sum(p.overflow[name][kind] for p in parts) for kind in ("current", "voltage")}
                  for name in parts[0].overflow},
        currents={name: np.concatenate([p.currents[name] for p in parts], axis=1) for name in parts[0].currents})


def plan_chip(net: Network, mapping: Mapping, target) -> _Plan:
    """The simulator's tables for `net` on its mapping (routes, costs, per-core indices): made once,
    run on any number of chunks."""
    if not net.fixed:
        raise ValueError("the cycle simulator runs fixed-point networks; quantize first")
    try:
        return _Plan(net, mapping, target)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise InputError(f"the mapping of '{mapping.network}' does not describe network '{net.name}' "
                         f"on {target.name} ({type(error).__name__}: {error})")


def bytes_per_sample(plan: _Plan) -> int:
    """What simulating one sample holds at most: what the reference holds for it (the simulator
    keeps the same tensors, in float32 where exact) plus the per-core, per-chip-step tables
    (synaptic ops, active neurons, routing time) and the neurons' received-input flags; a
    recurrent layer's spikes as float64 with its per-neuron received flags, and a delayed route's
    shifted float32 copy of its cells, at most one of each at a time."""
    T = plan.net.T
    steps = T + plan.max_depth
    per_core = 8 * steps * (3 * plan.n_cores + 1)
    received = 4 * T * sum(layer.H * layer.W for layer in plan.layers.values())
    recurrent = max((9 * T * math.prod(plan.layers[name].node.shape) for name in plan.recurrent), default=0)
    shifted = max((4 * T * math.prod(delays.shape) for routes in plan.routes_out.values() for route in routes
                   for delays in route.cell_delays), default=0)
    return execute.bytes_per_sample(plan.net) + per_core + received + recurrent + shifted


def samples_per_chunk(plan: _Plan, budget: int = execute.WORKING_SET_BYTES) -> int:
    """Samples per simulated chunk so that one chunk stays within `budget` bytes (at least 1)."""
    return max(1, min(execute.MAX_CHUNK, budget // bytes_per_sample(plan)))


def _run_chunks(plan: _Plan, inputs: np.ndarray, record_voltages, chunk: Optional[int]):
    chunk = samples_per_chunk(plan) if chunk is None else max(1, int(chunk))
    for start in range(0, inputs.shape[1], chunk):
        yield _chunk_result(_Run(plan, inputs[:, start:start + chunk], record_voltages).run())


def simulate(net: Network, mapping: Mapping, target, inputs: np.ndarray, record_voltages=(),
             chunk: Optional[int] = None, plan: Optional[_Plan] = None) -> tuple[execute.Trace, Counts]:
    """Run encoded integer inputs [T, B, ...] on the mapped chip: (logical-time Trace, Counts), in
    chunks of `chunk` samples (default: samples_per_chunk). The trace holds every layer's spikes
    for all B samples: for many samples, use simulate_chunks. plan: plan_chip's for these three,
    made once for many calls (default: made here)."""
    plan = plan or plan_chip(net, mapping, target)
    traces, counts = zip(*_run_chunks(plan, np.asarray(inputs), record_voltages, chunk))
    return concatenate_traces(net, list(traces)), combine_counts(list(counts))


def simulate_chunks(net: Network, mapping: Mapping, target, inputs: InputSet,
                    chunk: Optional[int] = None) -> Iterator[tuple[np.ndarray, Optional[np.ndarray], execute.Trace, Counts]]:
    """Stream an InputSet through the mapped chip: (the chunk's network input [T, b, ...], its
    labels or None, Trace, Counts) for each chunk of `chunk` samples (default: samples_per_chunk);
    the caller keeps what it needs."""
    plan = plan_chip(net, mapping, target)
    chunk = samples_per_chunk(plan) if chunk is None else max(1, int(chunk))
    for _, units, labels in inputs.chunks(chunk):
        x = inputs.network_input(net, units)
        trace, counts = _chunk_result(_Run(plan, x, ()).run())
        yield x, labels, trace, counts


def _target_of(net: Network):
    from snnc.targets import load_target

    return load_target(net.metadata.get("target", "loihi2"))


def run(net: Network, inputs, record_voltages=()) -> execute.Trace:
    """Backend interface: map `net` onto its target (net.metadata['target']) and simulate."""
    target = _target_of(net)
    trace, _ = simulate(net, map_to_cores(net, target), target, inputs, record_voltages)
    return trace


@functools.lru_cache(maxsize=1)
def _export_plan(export) -> _Plan:
    """The plan of an export, kept for the calls that follow (verify runs one per chunk)."""
    return plan_chip(export.network, load_mapping(export), export.target)


def run_export(export, inputs, record_voltages=()) -> execute.Trace:
    """Backend interface on an export: its network on its mapping.json and its own target copy."""
    plan = _export_plan(export)
    traces = [trace for trace, _ in _run_chunks(plan, np.asarray(inputs), record_voltages, None)]
    return concatenate_traces(plan.net, traces)


def simulate_export(export, inputs: InputSet) -> dict:
    """`snnc simulate`: the exported network on its exported mapping and target over `inputs`
    (streamed in chunks), as a JSON-able report; accuracy None without labels."""
    net, target, mapping = export.network, export.target, load_mapping(export)
    predictions, parts, overflow, correct = [], [], {}, 0
    for _, labels, trace, counts in simulate_chunks(net, mapping, target, inputs):
        predictions.append(trace.predictions)
        parts.append(counts)
        if labels is not None:
            correct += int((trace.predictions == labels).sum())
        for layer, events in trace.overflow.items():
            merged = overflow.setdefault(layer, {"current": 0, "voltage": 0})
            for kind, count in events.items():
                merged[kind] += count
    counts = combine_counts(parts)
    report = {"network": net.name, "target": target.name, "data": inputs.origin, "samples": int(inputs.count),
              "cores_used": mapping.totals["cores_used"], "tiles_used": mapping.totals["tiles_used"],
              "chips_used": mapping.totals["chips_used"],
              "predictions": [int(p) for p in np.concatenate(predictions)],
              "accuracy": None if inputs.labels is None else correct / inputs.count,
              "counts": counts.to_dict(), "energy_counts_per_sample": energy_counts(counts),
              "overflow_events": overflow, "time_source": target.time_ns.get("source", "")}
    time = report["counts"]["time"]
    report["latency_us_per_sample"] = time["latency_ns_mean"] / 1e3
    report["chip_samples_per_second"] = time["samples_per_second"]
    json.dumps(report)  # JSON-able by construction; fail here rather than in the caller
    return report


def simulate_outdir(outdir, data: Optional[str] = None, samples: Optional[int] = None) -> dict:
    """`snnc simulate OUTDIR [--data D] [--samples N]`: simulate_export on the export's inputs
    (snnc.backends.export_inputs: --data, else the data the export names)."""
    from snnc.backends import export_inputs
    from snnc.export_dir import ExportDir

    export = ExportDir.open(outdir)
    return simulate_export(export, export_inputs(export, data, samples))
