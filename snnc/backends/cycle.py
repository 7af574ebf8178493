"""Cycle-level multicore simulator: a fixed-point network on a target's mapped cores, step by step.

Per chip time step (docs/cycle-simulator.md):
1. neuron update: every layer whose pipeline window covers the step (a layer at synaptic depth d
   computes logical step t at chip step t + d) applies the fixed-point rule of snnc.execute
   (`FixedNeuronStep`: the one definition) to the input accumulated for it;
2. spike routing: the spikes just produced (and the host's input at steps 0..T-1) go out as one
   message per (axon, destination core), XY-routed over the tile mesh; hops are counted;
3. synaptic accumulation: each message costs its destination core one synaptic op per synapse of
   its axon there, into the accumulator slot of the step its layer will integrate it;
4. barrier synchronisation.
The functional result is computed with whole-layer tensor ops (vectorized over the batch, exact
integer arithmetic) and equals the integer reference spike for spike; the cores only decide what is
counted and the time model. Traces come back in logical time (T steps), as every backend's do.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from snnc import execute
from snnc.errors import InputError
from snnc.ir import Network, Node
from snnc.passes.quantize import largest_outputs
from snnc.passes.mapping import (Mapping, Partition, analyse, map_to_cores, segments, tile_reach)

NAME = "cycle"
DEFAULT_CHUNK = 64
EXACT_FLOAT32 = 2 ** 24
COUNT_KEYS = ("synaptic_op", "neuron_update_active", "neuron_update_inactive", "spikes", "messages",
              "spike_within_tile", "spike_across_tiles", "hop_east_west", "hop_north_south")
ENERGY_KEYS = ("synaptic_op", "neuron_update_active", "neuron_update_inactive", "spike_within_tile",
               "hop_east_west", "hop_north_south")


# ------------------------------------------------------------------------------- the plan

def _pre_flatten_name(net: Network, name: str) -> str:
    node = net.node(name)
    while node.op == "flatten":
        node = net.node(node.inputs[0])
    return node.name


def _integral_path(net: Network, name: str) -> bool:
    """Whether the reference's value of tensor `name` is an integer (a probe of execute's pools)."""
    node = net.node(name)
    if node.op == "input" or node.neuron is not None:
        return True
    if node.op in ("sumpool", "avgpool"):
        k = node.attrs["kernel"]
        probe = execute.synaptic_op(node, [torch.ones((1, 1, k, k), dtype=torch.float64)], with_bias=False)
        return float(probe.flatten()[0]) == k * k and _integral_path(net, node.inputs[0])
    return all(_integral_path(net, inp) for inp in node.inputs)


def _input_only(net: Network, name: str) -> bool:
    """Whether tensor `name` depends on the input alone (no neuron on the way): it is the same at
    every step when the input is (direct encoding presents one image T times)."""
    node = net.node(name)
    if node.op == "input":
        return True
    return node.neuron is None and all(_input_only(net, inp) for inp in node.inputs)


def _sum_pool(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Sum pooling with stride == kernel as adds of views. On integer values it gives the numbers
    of execute.synaptic_op's avg_pool2d(divisor_override=1) (integer sums are order-free), several
    times faster on CPU."""
    B, C, H, W = x.shape
    Ho, Wo = H // kernel, W // kernel
    cols = x[:, :, :Ho * kernel, :Wo * kernel].reshape(B, C, Ho * kernel, Wo, kernel)
    rows = cols[..., 0] + cols[..., 1] if kernel > 1 else cols[..., 0].clone()
    for j in range(2, kernel):
        rows += cols[..., j]
    rows = rows.reshape(B, C, Ho, kernel, Wo)
    out = rows[:, :, :, 0].clone()
    for i in range(1, kernel):
        out += rows[:, :, :, i]
    return out


@dataclass
class _Synapse:
    node: Node
    weight: torch.Tensor
    dtype: torch.dtype
    bound: int                            # largest |contribution| to a neuron's input


@dataclass
class _Route:
    """Counting data for the spikes of one source population into one synapse group of a layer."""

    dest: str
    group: int
    source: str
    block: tuple[int, int]
    shape: tuple[int, int, int]           # X before flatten (C, hx, wx)
    rows: torch.Tensor | None             # [row segments, H_src] (None: identity)
    cols: torch.Tensor | None             # [col segments, W_src]
    pooled: str | None                    # a tensor whose values are the cells (one sender per block)
    cell_to_position: torch.Tensor | None  # [spatial cells, X positions] (None: one cell per position)
    position_reach: torch.Tensor          # [X positions, dest positions]: synapses
    position_tiles: torch.Tensor          # [X positions, dest tiles]: synapses per channel held
    per_cell: torch.Tensor                # [cells, 4]: messages, within tile, ew hops, ns hops
    senders: torch.Tensor                 # [local senders] global index of each sending core (host = last)
    latency: torch.Tensor                 # [cells, local senders]: serial routing time of a cell's messages
    messages: torch.Tensor                # [cells, local senders]: messages a cell makes its sender send


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
    routes_in: list[_Route] = field(default_factory=list)


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
        self.core_neurons = torch.tensor([c["neurons"] for c in mapping.cores], dtype=torch.float64)
        self.max_depth = max(layer.depth for layer in layers.values())
        in_max = largest_outputs(net)
        self.fast_pools = {node.name for node in net.nodes if node.op == "sumpool"
                           and node.attrs["kernel"] == node.attrs["stride"] and _integral_path(net, node.inputs[0])}
        self.layers: dict[str, _Layer] = {}
        for name, info in layers.items():
            if name == self.input_name:
                continue
            node, part, entry = net.node(name), parts[name], mapping.layer(name)
            synapses = []
            for group in info.groups:
                exact = _integral_path(net, group.tensor)
                for syn_name in group.synapses:
                    syn = net.node(syn_name)
                    weight = np.asarray(syn.weight, dtype=np.float64)
                    bound = np.abs(weight).reshape(weight.shape[0], -1).sum(1).max() * in_max[group.tensor]
                    dtype = torch.float32 if exact and bound < EXACT_FLOAT32 else torch.float64
                    synapses.append(_Synapse(syn, torch.from_numpy(weight).to(dtype), dtype, int(np.ceil(bound))))
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
        self.rules = {name: execute.FixedNeuronStep(layer.node, net.arithmetic,
                                                    input_bound=sum(syn.bound for syn in layer.synapses) + 1)
                      for name, layer in self.layers.items()}   # stateless: shared by every chunk
        self.input_only_layers = {name for name, layer in self.layers.items()
                                  if all(_input_only(net, syn.node.inputs[0]) for syn in layer.synapses)}
        # routes: (source, destination group) pairs with their per-cell counting vectors
        self.routes_out: dict[str, list[_Route]] = {name: [] for name in layers}
        for name, info in layers.items():
            if name == self.input_name:
                continue
            dest = self.layers[name]
            for gi, group in enumerate(info.groups):
                for src, block in group.sources:
                    route = self._route(dest, info, gi, group, src, block, layers, parts, tiles)
                    dest.routes_in.append(route)
                    self.routes_out[src].append(route)
        n_tiles = len({tuple(t) for t in tiles[:-1].tolist()})
        mesh_tiles = (-(-mapping.mesh[0] // self.tile[0])) * (-(-mapping.mesh[1] // self.tile[1]))
        low, high = self.time["barrier_min"], self.time["barrier_max"]
        self.barrier_ns = low + (high - low) * (n_tiles - 1) / max(1, mesh_tiles - 1)
        self.tiles_used = n_tiles

    def _route(self, dest, info, gi, group, src, block, layers, parts, tiles) -> _Route:
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
        n_spatial = len(cell_pos)
        cell_to_position = torch.zeros((n_spatial, hx * wx), dtype=torch.float32)
        cell_to_position[torch.arange(n_spatial), torch.from_numpy(cell_pos)] = 1
        # destination cores reached by each X position
        r = tile_reach(group, info, dest.part.tile)
        n_tiles_d = dest.tile_core.shape[0]
        position_tiles = torch.zeros((hx * wx, n_tiles_d), dtype=torch.float32)
        position_tiles[torch.from_numpy(r.row), torch.from_numpy(r.col)] = torch.from_numpy(r.data.astype(np.float32))
        position_reach = torch.from_numpy(group.reach.toarray().astype(np.float32))
        reached = np.zeros((hx * wx, self.n_cores), np.float64)
        for g in range(dest.tile_core.shape[1]):
            reached[r.row, dest.tile_core[r.col, g].numpy()] = 1
        # sending core of each cell (channel, row segment, col segment)
        if src_first is None:
            senders = np.full((C, len(row_segs), len(col_segs)), self.host, np.int64)
        else:
            src_layer = self.layers[src]
            ntx = -(-source.W // src_part.tile[1])
            tile_of = np.array([s[1] for s in row_segs])[:, None] * ntx + np.array([s[1] for s in col_segs])[None, :]
            group_of = np.arange(C) // src_part.group
            senders = src_layer.tile_core.numpy()[tile_of[None, :, :], group_of[:, None, None]]
        # per (sender, X position): messages, within-tile, hops and serial latency
        t = self.time
        dest_cores = np.arange(self.n_cores)
        unique_senders = np.unique(senders)
        table = np.zeros((len(unique_senders), hx * wx, 5))
        for i, s in enumerate(unique_senders):
            ew = np.abs(tiles[s, 1] - tiles[dest_cores, 1])
            ns = np.abs(tiles[s, 0] - tiles[dest_cores, 0])
            same = (ew == 0) & (ns == 0)
            latency = np.where(same, t["spike_within_tile"], ew * t["hop_east_west"] + ns * t["hop_north_south"])
            table[i] = reached @ np.stack([np.ones(self.n_cores), same, ew, ns, latency], axis=1)
        which = np.searchsorted(unique_senders, senders).reshape(-1)             # [cells]
        per_cell = table[which.reshape(senders.shape),
                         np.broadcast_to(cell_pos.reshape(len(row_segs), len(col_segs)), senders.shape)].reshape(-1, 5)
        onehot = np.zeros((len(which), len(unique_senders)))
        onehot[np.arange(len(which)), which] = 1
        return _Route(dest=dest.name, group=gi, source=src, block=block, shape=(C, hx, wx), rows=rows, cols=cols,
                      pooled=pooled, cell_to_position=None if one_per_block else cell_to_position,
                      position_reach=position_reach, position_tiles=position_tiles,
                      per_cell=torch.from_numpy(per_cell[:, :4].astype(np.float64)),
                      senders=torch.from_numpy(unique_senders),
                      latency=torch.from_numpy((onehot * per_cell[:, 4:5]).astype(np.float32)),
                      messages=torch.from_numpy((onehot * per_cell[:, 0:1]).astype(np.float32)))


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
                         "+ routing (the busiest sender's messages in series) + barrier",
            },
        }


def energy_counts(counts: Counts, per_sample: bool = True) -> dict:
    """Per layer, the event counts that multiply target.energy_pj (keys as in the target file)."""
    n = max(1, counts.samples) if per_sample else 1
    return {name: {key: layer[key] / n for key in ENERGY_KEYS} for name, layer in counts.layers.items()}


# ---------------------------------------------------------------------------- simulation

class _Run:
    """One batch chunk stepped through T + L chip steps."""

    def __init__(self, plan: _Plan, inputs: np.ndarray, record_voltages):
        self.plan, self.net = plan, plan.net
        self.T, self.B = inputs.shape[:2]
        self.inputs = torch.from_numpy(np.ascontiguousarray(inputs)).to(torch.float32)
        self.record = set(record_voltages)
        self.outputs: dict[str, list] = {name: [None] * self.T for name in plan.layers}
        self.outputs[plan.input_name] = [self.inputs[t] for t in range(self.T)]
        self.spike_masks: dict[str, list] = {name: [None] * self.T for name in plan.layers}   # uint8 0/1
        self.static_input = bool((self.inputs == self.inputs[:1]).all())
        self.static_synaptic_input: dict[str, torch.Tensor] = {}
        self.route_cache: dict = {}           # a static input's routing effects
        self.values: dict[tuple[str, int], torch.Tensor] = {}
        self.events = {name: [torch.zeros((self.B, layer.H * layer.W)) for _ in range(self.T)]
                       for name, layer in plan.layers.items() if not layer.always_active}
        self.voltages = {name: [] for name in plan.layers if name in self.record}
        self.overflow = {name: {"current": 0, "voltage": 0} for name in plan.layers}
        self.rules = plan.rules
        self.state = {}
        K = plan.n_cores
        self.core = {key: torch.zeros(K + (key == "messages_sent"), dtype=torch.float64)
                     for key in ("synaptic_op", "neuron_update_active", "neuron_update_inactive", "messages_sent")}
        self.layer_counts = {name: dict.fromkeys(COUNT_KEYS, 0.0) for name in list(plan.layers) + [plan.input_name]}
        self.step_ns = []
        self.phase = {"compute": 0.0, "routing": 0.0, "barrier": 0.0}

    # the tensors on synaptic paths, as the reference computes them (snnc.execute.synaptic_op)
    def value(self, name: str, t: int) -> torch.Tensor:
        key = (name, t)
        if key not in self.values:
            node = self.net.node(name)
            if name in self.outputs:
                out = self.outputs[name][t]
                if out is None:   # a spiking layer's 0/1 spikes as float32, made when first read
                    out = self.spike_masks[name][t].to(torch.float32)
            elif name in self.plan.fast_pools:
                src, kernel = node.inputs[0], node.attrs["kernel"]
                if src in self.plan.layers and self.plan.layers[src].node.spiking and kernel * kernel < 256:
                    # spikes summed as uint8 (at most kernel^2 <= 255: exact), a quarter of the bytes
                    out = _sum_pool(self.spike_masks[src][t], kernel).to(torch.float32)
                else:
                    out = _sum_pool(self.value(src, t), kernel)
            else:
                out = execute.synaptic_op(node, [self.value(i, t) for i in node.inputs], with_bias=False)
            self.values[key] = out
        return self.values[key]

    def synaptic_input(self, layer: _Layer, t: int, dtype: torch.dtype) -> torch.Tensor:
        """The integer input of a layer's neurons as `dtype`, as the reference computes it: exact
        integer sums (float32 where every partial sum is an integer below 2^24, float64 otherwise).
        A layer fed by a static input alone gets the same input at every step: computed once."""
        if not (self.static_input and layer.name in self.plan.input_only_layers):
            return self._synaptic_sum(layer, t, dtype)
        if layer.name not in self.static_synaptic_input:
            self.static_synaptic_input[layer.name] = self._synaptic_sum(layer, 0, dtype)
        return self.static_synaptic_input[layer.name]

    def _synaptic_sum(self, layer: _Layer, t: int, dtype: torch.dtype) -> torch.Tensor:
        exact = all(syn.dtype == torch.float32 for syn in layer.synapses)
        total = None
        for syn in layer.synapses:
            x = self.value(syn.node.inputs[0], t).to(syn.dtype)
            if syn.node.op == "conv2d":
                z = F.conv2d(x, syn.weight, None, stride=tuple(syn.node.attrs["stride"]),
                             padding=tuple(syn.node.attrs["padding"]))
            else:
                z = x @ syn.weight.T
            z = z.to(dtype) if exact else z.to(torch.float64)
            total = z if total is None else total + z
        return total if exact else total.round().to(dtype)

    def neuron_phase(self, k: int, core_active: torch.Tensor):
        for name, layer in self.plan.layers.items():
            t = k - layer.depth
            if not 0 <= t < self.T:
                continue
            rule = self.rules[name]
            a = self.synaptic_input(layer, t, rule.dtype)
            if name not in self.state:
                self.state[name] = rule.initial_state(a.shape)
            u, v = self.state[name]
            if layer.always_active:
                core_active[:, layer.first:layer.first + layer.cores] += layer.core_neurons
            else:
                received = (self.events[name][t] > 0).reshape(self.B, 1, layer.H * layer.W)
                active = (received | (u != 0).reshape(self.B, layer.C, -1) | (v != 0).reshape(self.B, layer.C, -1)
                          | layer.bias_nonzero.reshape(1, layer.C, -1)).reshape(self.B, -1)
                core_active.index_add_(1, layer.core_of_neuron, active.to(torch.float64))
            out, u, v, events_u, events_v = rule.step(u, v, a)
            self.state[name] = (u, v)
            self.overflow[name]["current"] += events_u
            self.overflow[name]["voltage"] += events_v
            if name in self.record:
                self.voltages[name].append(v.to(torch.int64, copy=True))
            if layer.node.spiking:   # bool -> float32 through uint8: the same 0/1, far faster on CPU
                self.spike_masks[name][t] = out.view(torch.uint8)   # float32 made by value() if read
            else:
                self.outputs[name][t] = out
            if name in self.events:
                self.events[name][t] = None

    def routing_phase(self, k: int, core_synops: torch.Tensor, sender_latency: torch.Tensor):
        plan = self.plan
        for src, routes in plan.routes_out.items():
            depth = 0 if src == plan.input_name else plan.layers[src].depth
            t = k - depth
            if not routes or not 0 <= t < self.T:
                continue
            counts = self.layer_counts[src]
            # a static input sends the same messages at every step: its effects are computed once
            static = src == plan.input_name and self.static_input
            if src == plan.input_name:        # graded input events: pixels with a non-zero payload
                if not (static and "input spikes" in self.route_cache):
                    self.route_cache["input spikes"] = float((self.value(src, t) != 0).sum())
                counts["spikes"] += self.route_cache["input spikes"]
            for route in routes:
                if static:
                    if id(route) not in self.route_cache:
                        self.route_cache[id(route)] = self._route_effects(route, src, t)
                    effects = self.route_cache[id(route)]
                else:
                    effects = self._route_effects(route, src, t)
                totals, latency, messages, events, synops = effects
                counts["messages"] += totals[0]
                counts["spike_within_tile"] += totals[1]
                counts["spike_across_tiles"] += totals[0] - totals[1]
                counts["hop_east_west"] += totals[2]
                counts["hop_north_south"] += totals[3]
                sender_latency.index_add_(1, route.senders, latency)
                self.core["messages_sent"].index_add_(0, route.senders, messages)
                if events is not None:                                       # same logical step t
                    self.events[route.dest][t] += events
                core_synops.index_add_(1, plan.layers[route.dest].tile_core.reshape(-1), synops)

    def _route_effects(self, route: _Route, src: str, t: int):
        """What the messages of `src` at logical step t along `route` add to the counters: (count
        totals, per-sender latency [B, senders], messages per sender, destination events or None,
        synaptic ops [B, destination cores])."""
        C = route.shape[0]
        if route.pooled is not None:       # the pooled tensor itself: one sender per value
            cells = self.value(route.pooled, t)
        else:
            spikes = self.value(src, t)
            if spikes.dim() == 2:
                spikes = spikes.reshape(self.B, -1, 1, 1)
            if route.rows is not None:     # partial sums of blocks split over senders
                cells = torch.matmul(torch.matmul(route.rows, spikes), route.cols.T)
            else:
                cells = spikes
        nz = (cells != 0).reshape(self.B, -1).to(torch.float32)             # messages to send
        per_cell = nz.sum(0)
        totals = (per_cell.to(torch.float64) @ route.per_cell).tolist()
        latency = (nz @ route.latency).to(torch.float64)
        messages = (per_cell @ route.messages).to(torch.float64)
        # synaptic ops on the destination cores, and which destination neurons got input
        per_position = nz.reshape(self.B, C, -1).sum(1)                     # [B, cells per channel]
        if route.cell_to_position is not None:
            per_position = per_position @ route.cell_to_position            # [B, X positions]
        dest = self.plan.layers[route.dest]
        events = None if dest.always_active else per_position @ route.position_reach
        per_tile = (per_position @ route.position_tiles).to(torch.float64)  # [B, dest tiles]
        synops = per_tile[:, :, None] * dest.group_sizes[None]               # [B, tiles, groups]
        return totals, latency, messages, events, synops.reshape(self.B, -1)

    def step(self, k: int):
        plan, B = self.plan, self.B
        K = plan.n_cores
        core_active = torch.zeros((B, K), dtype=torch.float64)
        core_synops = torch.zeros((B, K), dtype=torch.float64)
        sender_latency = torch.zeros((B, K + 1), dtype=torch.float64)
        self.neuron_phase(k, core_active)
        self.routing_phase(k, core_synops, sender_latency)
        inactive = plan.core_neurons[None] - core_active
        t = plan.time
        compute = (core_synops * t["synaptic_op"] + core_active * t["neuron_update_active"]
                   + inactive * t["neuron_update_inactive"]).max(dim=1).values
        routing = sender_latency.max(dim=1).values
        self.step_ns.append((compute + routing + plan.barrier_ns).numpy())
        self.phase["compute"] += float(compute.sum())
        self.phase["routing"] += float(routing.sum())
        self.phase["barrier"] += plan.barrier_ns * B
        self.core["synaptic_op"] += core_synops.sum(0)
        self.core["neuron_update_active"] += core_active.sum(0)
        self.core["neuron_update_inactive"] += inactive.sum(0)
        # free what no later step reads
        done = k - plan.max_depth
        if 0 <= done < self.T:
            for key in [key for key in self.values if key[1] == done]:
                del self.values[key]

    def run(self):
        for k in range(self.T + self.plan.max_depth):
            self.step(k)
        plan = self.plan
        spikes, readout = {}, None
        for name, layer in plan.layers.items():
            if layer.node.spiking:
                spikes[name] = torch.stack(self.spike_masks[name]).numpy()
                self.layer_counts[name]["spikes"] = float(np.count_nonzero(spikes[name]))
            else:
                readout = torch.stack(self.outputs[name]).numpy()
        voltages = {name: torch.stack(v).numpy() for name, v in self.voltages.items()}
        return spikes, readout, voltages


def _merge(parts: list, plan: _Plan, T: int):
    spikes = {name: np.concatenate([p.result[0][name] for p in parts], axis=1) for name in parts[0].result[0]}
    readout_steps = np.concatenate([p.result[1] for p in parts], axis=1)
    voltages = {name: np.concatenate([p.result[2][name] for p in parts], axis=1) for name in parts[0].result[2]}
    overflow = {name: {kind: sum(p.overflow[name][kind] for p in parts) for kind in ("current", "voltage")}
                for name in parts[0].overflow}
    trace = execute.Trace(spikes=spikes, readout_steps=readout_steps,
                          readout=execute.readout(plan.net, readout_steps), voltages=voltages, overflow=overflow)
    layers = {name: {key: sum(p.layer_counts[name][key] for p in parts) for key in COUNT_KEYS}
              for name in parts[0].layer_counts}
    cores = {key: sum(p.core[key] for p in parts).numpy() for key in parts[0].core}
    for name, layer in plan.layers.items():     # a layer's receiving counts: the sum over its cores
        for key in ("synaptic_op", "neuron_update_active", "neuron_update_inactive"):
            layers[name][key] = float(cores[key][layer.first:layer.first + layer.cores].sum())
    cores["input_port_messages"] = cores["messages_sent"][plan.n_cores:].copy()
    cores["messages_sent"] = cores["messages_sent"][:plan.n_cores]
    step_ns = np.concatenate([np.stack(p.step_ns) for p in parts], axis=1)
    phase = {key: sum(p.phase[key] for p in parts) for key in parts[0].phase}
    counts = Counts(samples=int(readout_steps.shape[1]), steps=T + plan.max_depth, layers=layers, cores=cores,
                    step_ns=step_ns, phase_ns=phase, barrier_ns=plan.barrier_ns, tiles_used=plan.tiles_used)
    return trace, counts


def simulate(net: Network, mapping: Mapping, target, inputs: np.ndarray, record_voltages=(),
             chunk: int = DEFAULT_CHUNK) -> tuple[execute.Trace, Counts]:
    """Run encoded integer inputs [T, B, ...] on the mapped chip: (logical-time Trace, Counts)."""
    if not net.fixed:
        raise ValueError("the cycle simulator runs fixed-point networks; quantize first")
    inputs = np.asarray(inputs)
    plan = _Plan(net, mapping, target)
    parts = []
    for start in range(0, inputs.shape[1], chunk):
        part = _Run(plan, inputs[:, start:start + chunk], record_voltages)
        part.result = part.run()
        parts.append(part)
    return _merge(parts, plan, inputs.shape[0])


def _target_of(net: Network):
    from snnc.targets import load_target

    return load_target(net.metadata.get("target", "loihi2"))


def run(net: Network, inputs, record_voltages=()) -> execute.Trace:
    """Backend interface: map `net` onto its target (net.metadata['target']) and simulate."""
    target = _target_of(net)
    trace, _ = simulate(net, map_to_cores(net, target), target, inputs, record_voltages)
    return trace


def simulate_export(outdir, images, samples: int | None = None, labels=None) -> dict:
    """`snnc simulate OUTDIR`: the exported network on its target's cores, as a JSON-able report."""
    from snnc.compiler import load_export
    from snnc.targets import load_target

    net, manifest = load_export(outdir)
    target = load_target(manifest["target"])
    images = np.asarray(images)[:samples] if samples else np.asarray(images)
    mapping = map_to_cores(net, target)
    trace, counts = simulate(net, mapping, target, execute.encode(net, images))
    report = {"network": net.name, "target": target.name, "samples": int(len(images)),
              "cores_used": mapping.totals["cores_used"], "tiles_used": mapping.totals["tiles_used"],
              "predictions": [int(p) for p in trace.predictions],
              "counts": counts.to_dict(), "energy_counts_per_sample": energy_counts(counts),
              "overflow_events": trace.overflow,
              "time_source": target.time_ns.get("source", "")}
    if labels is not None:
        labels = np.asarray(labels)[:len(images)]
        report["accuracy"] = float((trace.predictions == labels).mean())
    time = report["counts"]["time"]
    report["latency_us_per_sample"] = time["latency_ns_mean"] / 1e3
    report["chip_samples_per_second"] = time["samples_per_second"]
    json.dumps(report)  # JSON-able by construction; fail here rather than in the caller
    return report
