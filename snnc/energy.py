"""`snnc energy`: per-layer operation counts and energy per sample, with every figure's model named.

Two conventions side by side (docs/semantics.md, section 7):
- counted: the cycle simulator's exact events on the mapped chip (each presynaptic spike or non-zero
  graded input costs one synaptic op per synapse it drives, borders included), priced with the
  target's per-operation table (synaptic ops, neuron updates, spikes within a tile, hops);
- papers' estimate: SOPs(l) = input firing rate x T x FLOPs(l), E = E_MAC x FLOPs(first layer)
  + E_AC x sum of SOPs(other layers), with the 45 nm CMOS table (Horowitz 2014). A recurrent
  layer adds its own firing rate x T x N^2 SOPs (its N x N recurrent matrix reads its spikes),
  the input layer's included; the counted convention has them among the cycle simulator's
  synaptic ops.
A multi-spike population (neuron.max_spikes > 1) sends one graded message per neuron and step with
a non-zero count: in both conventions the message drives one synaptic op per synapse whatever the
count, so its rate is the fraction of neuron-steps that send (its `spikes` are the counts' sum).
A sigma-delta population likewise sends one graded message per non-zero delta (its `spikes` are
those messages).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from snnc.errors import CheckFailed, InputError, OutputError
from snnc.export_dir import ExportDir, check_file_output, write_file
from snnc.ir import Network, Node
from snnc.passes.fold import synaptic_inputs
from snnc.targets import load_energy_table

PJ_PER_UJ = 1e6


def flops(node: Node) -> int:
    """FLOPs of a synaptic node in the papers' convention: k^2 H_out W_out C_in C_out, or in x out."""
    if node.op == "conv2d":
        out_channels, in_channels, kh, kw = node.weight.shape
        return int(kh * kw * node.shape[1] * node.shape[2] * in_channels * out_channels)
    return int(node.weight.size)


def recurrent_flops(node: Node) -> int:
    """FLOPs of a population's recurrent synapses in the same convention: the N x N matrix."""
    return 0 if node.recurrent is None else int(np.asarray(node.recurrent).size)


def _source_is_input(net: Network, name: str) -> bool:
    """Whether a synapse reads the network input, directly or through views (flatten, pooling)."""
    node = net.node(name)
    if node.op == "input":
        return True
    return node.op in ("avgpool", "sumpool", "flatten") and _source_is_input(net, node.inputs[0])


@dataclass
class Activity:
    """What the rates of a report are made of, summed over the chunks of samples: every spiking
    layer's spikes and messages (neuron-steps with a non-zero count; the same for a binary layer)
    and the network input's values (whose mean per element and step is its rate)."""

    net: Network
    samples: int = 0
    spikes: dict = field(default_factory=dict)     # spiking layer -> spikes (the counts' sum; a sigma-delta layer's messages)
    messages: dict = field(default_factory=dict)   # spiking layer -> messages over all samples
    input_sum: int = 0

    def add(self, trace, inputs: np.ndarray) -> None:
        """One chunk: its trace and the network input it ran on [T, b, ...]."""
        self.samples += int(inputs.shape[1])
        self.input_sum += int(np.asarray(inputs).sum(dtype=np.int64))
        for name, spikes in trace.spikes.items():
            messages = int(np.count_nonzero(spikes))
            counted = messages if self.net.node(name).neuron.kind == "sigma_delta" else int(spikes.sum(dtype=np.int64))
            self.spikes[name] = self.spikes.get(name, 0) + counted
            self.messages[name] = self.messages.get(name, 0) + messages

    def rate(self, name: str) -> float:
        """Events per element and step that a node's consumers read: a spiking layer's messages (its
        firing rate; a multi-spike count is one message), the input's mean value (its firing rate when
        it is itself binary spikes)."""
        node = self.net.node(name)
        elements = self.net.T * self.samples * int(np.prod(node.shape))
        if node.spiking:
            return self.messages[name] / elements
        if node.op == "input":
            return self.input_sum / elements
        if node.op in ("avgpool", "sumpool", "flatten"):
            return self.rate(node.inputs[0])
        if node.op == "add":
            return sum(self.rate(source) for source in node.inputs)
        raise InputError(f"layer '{name}' has no firing rate")


def _layer_rows(net: Network, activity: Activity, counts: dict, chip_table: dict,
                cmos: dict) -> list[dict]:
    # A layer reading graded input (pixels) multiplies: the papers' MAC term. One reading binary
    # input spikes (event data, netx networks) accumulates like every other layer.
    spiking_input = net.encoding.get("kind") == "spikes"
    rows = []
    for node in net.nodes:
        if node.neuron is None:
            continue
        synapses = synaptic_inputs(net, node)
        first_layer = not spiking_input and any(_source_is_input(net, syn.inputs[0]) for syn in synapses)
        forward_flops = sum(flops(syn) for syn in synapses)
        layer_flops = forward_flops + recurrent_flops(node)
        # recurrent synapses accumulate the layer's own spikes of the step before: SOPs in any layer
        recurrent_sops = activity.rate(node.name) * net.T * recurrent_flops(node) if node.recurrent is not None else 0.0
        events = counts.get(node.name, {})
        row = {
            "layer": node.name,
            "neurons": int(np.prod(node.shape)),
            "flops": layer_flops,
            "synaptic_ops_counted": events.get("synaptic_op", 0.0),
            "neuron_updates_active": events.get("neuron_update_active", 0.0),
            "neuron_updates_inactive": events.get("neuron_update_inactive", 0.0),
            "spikes": activity.spikes[node.name] / activity.samples if node.spiking else 0.0,
            "firing_rate": activity.rate(node.name) if node.spiking else None,
        }
        if first_layer:
            row.update(input_firing_rate=None, macs=forward_flops, sops_estimate=recurrent_sops,
                       energy_45nm_estimate_pj=cmos["mac"] * forward_flops + cmos["ac"] * recurrent_sops)
        else:
            sops = sum(activity.rate(syn.inputs[0]) * flops(syn) for syn in synapses) * net.T + recurrent_sops
            row.update(input_firing_rate=sops / (net.T * layer_flops), macs=0, sops_estimate=sops,
                       energy_45nm_estimate_pj=cmos["ac"] * sops)
        row["energy_45nm_counted_pj"] = cmos["ac"] * row["synaptic_ops_counted"]
        # an event that never happens needs no price (a single chip has no chip-to-chip link)
        row["energy_chip_by_event_pj"] = {key: chip_table[key] * count for key, count in events.items() if count}
        row["energy_chip_pj"] = sum(row["energy_chip_by_event_pj"].values())
        rows.append(row)
    return rows


MODELS = {
    "synaptic_ops_counted": "events per sample from the cycle simulator: one op per synapse a spike "
                            "(or non-zero graded input, or multi-spike count) actually drives",
    "sops_estimate": "papers' estimate per sample: input firing rate x T x FLOPs (recurrent: the layer's "
                     "own rate x T x N^2); a multi-spike count is one event, its rate the messages'",
    "macs": "FLOPs of the non-spiking input layer (k^2 H_out W_out C_in C_out), the papers' MAC term",
    "energy_chip_pj": "counted events per sample x the target's per-operation energy (pJ)",
    "energy_chip_by_event_pj": "energy_chip_pj by kind of event: synaptic ops, neuron updates, messages, hops (pJ)",
    "energy_45nm_estimate_pj": "E_MAC x MACs (input layer) or E_AC x SOPs estimate, 45 nm CMOS (pJ)",
    "energy_45nm_counted_pj": "E_AC x counted synaptic ops, 45 nm CMOS (pJ)",
    "latency_us": "modelled chip time per sample from the target's per-operation times (us)",
}


def energy_report(outdir, data: Optional[str] = None, samples: Optional[int] = None,
                  target: Optional[str] = None) -> dict:
    """Run the exported network on the cycle simulator, chunk by chunk, and price what it did;
    accuracy None when the inputs have no labels."""
    from snnc.backends import cycle, export_inputs
    from snnc.passes.mapping import load_mapping, map_to_cores

    export = ExportDir.open(outdir)
    net = export.network
    chip = export.target_or(target)
    cmos = load_energy_table("cmos45nm")
    inputs = export_inputs(export, data, samples)
    # the exported mapping, unless another target is asked for (which needs its own mapping)
    mapping = map_to_cores(net, chip) if target else load_mapping(export)
    activity, parts, correct = Activity(net), [], 0
    for x, labels, trace, counts in cycle.simulate_chunks(net, mapping, chip, inputs):
        activity.add(trace, x)
        parts.append(counts)
        if labels is not None:
            correct += int((trace.predictions == labels).sum())
    counts = cycle.combine_counts(parts)
    rows = _layer_rows(net, activity, cycle.energy_counts(counts), chip.energy_pj, cmos.energy_pj)
    time = counts.to_dict()["time"]
    totals = {key: float(sum(row[key] for row in rows)) for key in (
        "flops", "synaptic_ops_counted", "sops_estimate", "macs", "neuron_updates_active",
        "neuron_updates_inactive", "spikes", "energy_chip_pj", "energy_45nm_estimate_pj",
        "energy_45nm_counted_pj")}
    totals["energy_chip_by_event_pj"] = {}   # what each kind of event adds to the chip's figure
    for row in rows:
        for key, pj in row["energy_chip_by_event_pj"].items():
            totals["energy_chip_by_event_pj"][key] = totals["energy_chip_by_event_pj"].get(key, 0.0) + pj
    totals["energy_chip_uj"] = totals["energy_chip_pj"] / PJ_PER_UJ
    totals["energy_45nm_estimate_uj"] = totals["energy_45nm_estimate_pj"] / PJ_PER_UJ
    totals["latency_us"] = time["latency_ns_mean"] / 1e3
    totals["chip_samples_per_second"] = time["samples_per_second"]
    return {
        "network": net.name, "target": chip.name, "data": inputs.origin, "samples": int(inputs.count),
        "T": net.T, "accuracy": None if inputs.labels is None else correct / inputs.count,
        "units": "per sample; counts in events, energy in pJ (totals also in uJ), latency in us",
        "models": dict(MODELS, chip_table=chip.energy_pj["source"], cmos_table=cmos.energy_pj["source"],
                       time=time["model"]),
        "layers": rows, "totals": totals,
    }


def check_gate_limits(budget_uj: Optional[float], max_regression: Optional[float]) -> None:
    """Refuse a gate that could never fail (before any work is done)."""
    if budget_uj is not None and not (math.isfinite(budget_uj) and budget_uj > 0):
        raise InputError(f"--budget-uj must be a positive number, got {budget_uj}")
    if max_regression is not None and not (math.isfinite(max_regression) and max_regression >= 0):
        raise InputError(f"--max-regression must be a non-negative number, got {max_regression}")


def _baseline_totals(baseline) -> dict:
    """The totals of a saved report; every gated figure must be a positive finite number."""
    try:
        previous = json.loads(Path(baseline).read_text())["totals"]
        values = {key: previous[key] for key in ("energy_chip_uj", "synaptic_ops_counted")}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InputError(f"{baseline}: not an snnc energy report (snnc energy --format json)")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise InputError(f"{baseline}: totals.{key} must be a positive number, got {value!r}")
    return values


def check_gates(report: dict, budget_uj: Optional[float] = None, baseline: Optional[str] = None,
                max_regression: Optional[float] = None) -> list[str]:
    """Messages for every gate the report fails (empty when all pass). A gate whose limit or
    measurement is not a finite number fails instead of passing: NaN compares false with anything."""
    check_gate_limits(budget_uj, max_regression)
    failures = []
    energy = report["totals"]["energy_chip_uj"]
    if budget_uj is not None and not energy <= budget_uj:
        failures.append(f"energy {energy:.4f} uJ per sample exceeds the budget of {budget_uj} uJ")
    if baseline is not None:
        previous = _baseline_totals(baseline)
        limit = 1 + (max_regression or 0.0) / 100
        for key, label in (("energy_chip_uj", "energy"), ("synaptic_ops_counted", "synaptic ops")):
            if not report["totals"][key] <= previous[key] * limit:
                growth = 100 * (report["totals"][key] / previous[key] - 1)
                failures.append(f"{label} per sample grew {growth:.2f}% against {baseline} "
                                f"(limit {max_regression or 0.0}%)")
    return failures


def gate(report: dict, **limits) -> None:
    failures = check_gates(report, **limits)
    if failures:
        raise CheckFailed("; ".join(failures))


COLUMNS = (("layer", "layer", "{}"), ("firing_rate", "rate", "{:.4f}"), ("flops", "FLOPs", "{:,.0f}"),
           ("synaptic_ops_counted", "SOPs counted", "{:,.0f}"), ("sops_estimate", "SOPs est.", "{:,.0f}"),
           ("macs", "MACs", "{:,.0f}"), ("neuron_updates_active", "updates act.", "{:,.0f}"),
           ("spikes", "spikes", "{:,.1f}"), ("energy_chip_pj", "E chip pJ", "{:,.0f}"),
           ("energy_45nm_estimate_pj", "E 45nm est. pJ", "{:,.0f}"))


def _cells(row: dict) -> list[str]:
    return ["-" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in COLUMNS]


def format_table(report: dict, markdown: bool = False) -> str:
    """The per-layer report as aligned text or a Markdown table (for a CI job summary)."""
    totals = report["totals"]
    rows = [_cells(row) for row in report["layers"]]
    rows.append(_cells(dict(totals, layer="total", firing_rate=None)))
    header = [title for _, title, _ in COLUMNS]
    title = (f"snnc energy: {report['network']} on {report['target']}, {report['samples']} samples of "
             f"{report['data']}, T={report['T']}, accuracy "
             + ("- (no labels)" if report["accuracy"] is None else f"{report['accuracy']:.4f}"))
    by_event = sorted(totals["energy_chip_by_event_pj"].items(), key=lambda item: -item[1])
    summary = [f"energy per sample: {totals['energy_chip_uj']:.4f} uJ on {report['target']} "
               f"(counted events x target table), {totals['energy_45nm_estimate_uj']:.4f} uJ "
               f"(papers' 45 nm estimate: {totals['sops_estimate']:,.0f} SOPs + {totals['macs']:,.0f} MACs)",
               f"{report['target']} energy by event: " + ", ".join(
                   f"{key} {pj / PJ_PER_UJ:.4f} uJ ({pj / totals['energy_chip_pj']:.0%})" for key, pj in by_event),
               f"chip latency per sample: {totals['latency_us']:.2f} us, "
               f"{totals['chip_samples_per_second']:,.0f} samples/s (modelled)",
               f"{report['target']} table: {report['models']['chip_table']}",
               f"45 nm table: {report['models']['cmos_table']}"]
    if markdown:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join(lines + [""] + [f"- {line}" for line in summary])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in rows]
    return "\n".join(lines + summary + [f"units: {report['units']}"])


def check_plot_path(path) -> Path:
    """Fail before any work when the plot could not be written."""
    if Path(path).suffix.lower() != ".png":
        raise OutputError(f"{path}: the plot is written as PNG; give a .png file name")
    return check_file_output(path, force=True, replaceable=_is_png, what="PNG plot")


def plot(report: dict, path) -> None:
    """Per-layer energy (both conventions) and firing rates, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [row["layer"] for row in report["layers"]]
    x = np.arange(len(layers))
    figure, (energy_axis, rate_axis) = plt.subplots(1, 2, figsize=(11, 4))
    energy_axis.bar(x - 0.2, [row["energy_chip_pj"] / 1e3 for row in report["layers"]], 0.4,
                    label=f"{report['target']} (counted events)")
    energy_axis.bar(x + 0.2, [row["energy_45nm_estimate_pj"] / 1e3 for row in report["layers"]], 0.4,
                    label="45 nm (papers' estimate)")
    energy_axis.set(xticks=x, xticklabels=layers, ylabel="energy per sample (nJ)", title="energy per layer")
    energy_axis.legend()
    rates = [row["firing_rate"] or 0.0 for row in report["layers"]]
    rate_axis.bar(x, rates, color="tab:green")
    rate_axis.set(xticks=x, xticklabels=layers, ylabel="spikes per neuron per step", title="firing rate")
    figure.suptitle(f"{report['network']} on {report['target']}")
    figure.tight_layout()
    try:
        write_file(check_plot_path(path), lambda handle: figure.savefig(handle, format="png", dpi=100),
                   force=True, replaceable=_is_png, what="PNG plot")
    finally:
        plt.close(figure)


def _is_png(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"
