"""`snnc verify`: run several backends on the same inputs and find the first divergence.

Every backend runs the files the export ships (backend.run_export): the integer reference runs
network.json, which is the definition; every other backend's trace (in logical time) is compared
with it: every layer's spikes at every step, then the readout. The first divergence is the earliest
sample, then the earliest step, then the earliest layer in network order, then the lowest neuron
index; it comes with the membrane history of that neuron from every backend that exposes it, and
the offending input is saved so the case can be replayed with `--input`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from snnc import execute
from snnc.backends import export_inputs, get_backend
from snnc.data import InputSet, InputSpec
from snnc.errors import InputError, OutputError, UsageError
from snnc.execute import Trace
from snnc.export_dir import ExportDir, check_file_output, write_file
from snnc.ir import Network

REFERENCE = "reference"


def accuracy(net: Network, inputs: InputSet) -> float:
    """The accuracy of a network (float or fixed) over labelled inputs, chunk by chunk."""
    size = execute.samples_per_chunk(net)
    found = [execute.run(net, inputs.network_input(net, units), chunk=size).predictions
             for _, units, _ in inputs.chunks(size)]
    return float((np.concatenate(found) == inputs.labels).mean())


def fidelity(folded: Optional[Network], fixed: Network, inputs: InputSet,
             progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Float (folded, float64) against quantized over `inputs`, chunk by chunk: the accuracy of
    each (None without labels) and the per-layer spike agreement. A source that is already fixed
    point (folded None) has only the integer network's accuracy. Chunks are sized so that the
    fixed trace held while the float network runs fits the working set too."""
    predictions = {"float": [], "fixed": []}
    agree = {node.name: 0 for node in fixed.spiking_nodes()}
    overflow: dict[str, dict[str, int]] = {}
    size = execute.samples_per_chunk(fixed, execute.WORKING_SET_BYTES // 2)
    for start, units, _ in inputs.chunks(size):
        fixed_trace = execute.run(fixed, inputs.network_input(fixed, units), chunk=size)
        predictions["fixed"].append(fixed_trace.predictions)
        for layer, events in fixed_trace.overflow.items():
            merged = overflow.setdefault(layer, {"current": 0, "voltage": 0})
            for kind, count in events.items():
                merged[kind] += count
        if folded is not None:
            float_trace = execute.run(folded, inputs.network_input(folded, units), chunk=size)
            predictions["float"].append(float_trace.predictions)
            for name, spikes in fixed_trace.spikes.items():
                agree[name] += int((float_trace.spikes[name] == spikes).sum())
        progress(start + units.shape[1], inputs.count)
    fixed_predictions = np.concatenate(predictions["fixed"])
    labels = inputs.labels

    def accuracy(found):
        return None if labels is None else float((found == labels).mean())

    report = {"samples": int(inputs.count), "data": inputs.origin,
              "quantized_accuracy": accuracy(fixed_predictions), "overflow_events": overflow}
    if folded is None:
        report.update(float_accuracy=None,
                      note="the source is already fixed point: there is no float network to compare")
        return report
    float_predictions = np.concatenate(predictions["float"])
    sizes = {node.name: fixed.T * inputs.count * int(np.prod(node.shape)) for node in fixed.spiking_nodes()}
    report.update(float_accuracy=accuracy(float_predictions),
                  prediction_agreement=float((float_predictions == fixed_predictions).mean()),
                  spike_agreement={name: agree[name] / sizes[name] for name in agree})
    return report


def _first_difference(net: Network, expected: Trace, actual: Trace) -> Optional[dict]:
    """Earliest (sample, step, layer, neuron) where `actual` differs from `expected`, or None."""
    best = None
    layers = [node.name for node in net.spiking_nodes()]
    for order, layer in enumerate(layers):
        differs = expected.spikes[layer] != actual.spikes[layer]
        if not differs.any():
            continue
        steps, samples = differs.shape[:2]
        flat = differs.reshape(steps, samples, -1)
        sample = int(np.nonzero(flat.any(axis=(0, 2)))[0][0])
        step = int(np.nonzero(flat[:, sample].any(axis=1))[0][0])
        neuron = int(np.nonzero(flat[step, sample])[0][0])
        key = (sample, step, order)
        if best is None or key < best[0]:
            best = (key, {"sample": sample, "step": step, "layer": layer, "neuron": neuron,
                          "neuron_index": [int(i) for i in np.unravel_index(neuron, differs.shape[2:])]})
    readout_differs = np.nonzero((expected.readout != actual.readout).any(axis=1))[0]
    if readout_differs.size and (best is None or readout_differs[0] < best[0][0]):
        sample = int(readout_differs[0])
        cls = int(np.nonzero(expected.readout[sample] != actual.readout[sample])[0][0])
        return {"sample": sample, "step": None, "layer": "readout", "neuron": cls, "neuron_index": [cls]}
    return None if best is None else best[1]


def count_mismatches(net: Network, expected: Trace, actual: Trace) -> dict:
    """Differing spikes per layer and differing readout rows."""
    counts = {layer: int((expected.spikes[layer] != actual.spikes[layer]).sum())
              for layer in (node.name for node in net.spiking_nodes())}
    counts["readout"] = int((expected.readout != actual.readout).any(axis=1).sum())
    return counts


def _membrane_history(export: ExportDir, modules: dict, inputs: np.ndarray, layer: str, neuron: int) -> dict:
    """The membrane of one neuron at every step, from each backend that records voltages."""
    history = {}
    if layer == "readout":
        layer = export.network.output_node.name
    for name, module in modules.items():
        try:
            trace = module.run_export(export, inputs, record_voltages=(layer,))
        except NotImplementedError:
            continue
        volts = trace.voltages.get(layer)
        if volts is not None:
            history[name] = [int(v) for v in volts[:, 0].reshape(volts.shape[0], -1)[:, neuron]]
    return history


def _describe(first: dict, backend: str, expected: Trace, actual: Trace, local_sample: int) -> dict:
    first = dict(first, backend=backend)
    if first["layer"] == "readout":
        first["values"] = {REFERENCE: int(expected.readout[local_sample, first["neuron"]]),
                           backend: int(actual.readout[local_sample, first["neuron"]])}
    else:
        step, layer, neuron = first["step"], first["layer"], first["neuron"]

        def value(trace):
            return int(trace.spikes[layer][step, local_sample].reshape(-1)[neuron])

        first["values"] = {REFERENCE: value(expected), backend: value(actual)}
    return first


def load_inputs(export: ExportDir, data: Optional[str], samples: Optional[int],
                input_file: Optional[str]) -> InputSet:
    """What verify runs: the export's inputs (snnc.backends.export_inputs), or a replayed input
    file saved by a failed verify (per-step units [T, B, ...], no labels)."""
    if input_file is None:
        return export_inputs(export, data, samples)
    net = export.network
    try:
        archive = np.load(input_file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{input_file}: not an snnc verify input file (an .npz holding 'inputs')")
        with archive:
            inputs = archive["inputs"]
    except (OSError, ValueError, EOFError, KeyError) as error:
        raise InputError(f"{input_file}: not an snnc verify input file ({error})")
    if not np.issubdtype(inputs.dtype, np.integer):
        raise InputError(f"{input_file}: inputs must be integers (encoded inputs), got {inputs.dtype}")
    expected = (net.T,) + tuple(net.input_node.shape)
    if inputs.ndim != len(expected) + 1 or (inputs.shape[0],) + inputs.shape[2:] != expected:
        raise InputError(f"{input_file}: inputs shaped {list(inputs.shape)}, the network needs "
                         f"[{net.T}, batch, {', '.join(map(str, net.input_node.shape))}]")
    if inputs.shape[1] < 1:
        raise InputError(f"{input_file}: holds no sample")
    inputs = inputs.astype(np.int64)
    count = inputs.shape[1] if samples is None else min(samples, inputs.shape[1])
    return InputSet(str(input_file), "steps", InputSpec.of(net), count, None,
                    lambda start, stop: inputs[:, start:stop])


def _is_verify_input(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files) == ["inputs"]
    except (OSError, ValueError, EOFError, AttributeError, TypeError):
        return False


def _check_save_input(save_input) -> Path:
    """Fail before any work when the divergence input could not be saved later."""
    return check_file_output(save_input, force=True, replaceable=_is_verify_input, what="verify input")


def _save_input(path: Path, inputs: np.ndarray) -> dict:
    """Save the diverging sample; a failure is reported next to the divergence, not instead of it."""
    try:
        write_file(path, lambda handle: np.savez(handle, inputs=inputs), force=True,
                   replaceable=_is_verify_input, what="verify input")
    except OutputError as error:
        return {"saved_input": None, "save_error": str(error)}
    return {"saved_input": str(path)}


def verify(outdir, backends: list[str], data: Optional[str] = None, samples: Optional[int] = None,
           input_file: Optional[str] = None, save_input: str = "snnc-verify-input.npz",
           progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Run the exported artifacts of `backends` on the same inputs, chunk by chunk (sized from the
    network), and compare each with the integer reference (network.json); a JSON-able report.
    The first chunk with a divergence is the last one run."""
    names = [REFERENCE] + [b for b in dict.fromkeys(backends) if b != REFERENCE]
    if len(names) < 2:
        raise UsageError("--backends must name at least one backend to compare with the reference")
    modules = {name: get_backend(name) for name in names}
    save_path = _check_save_input(save_input)
    export = ExportDir.open(outdir)
    net, manifest = export.network, export.manifest
    inputs = load_inputs(export, data, samples, input_file)
    mismatches = {name: None for name in names[1:]}
    first, checked = None, 0
    overflow: dict[str, dict[str, dict[str, int]]] = {}  # backend -> layer -> kind -> events

    def count_overflow(name, trace):
        for layer, events in trace.overflow.items():
            merged = overflow.setdefault(name, {}).setdefault(layer, {"current": 0, "voltage": 0})
            for kind, count in events.items():
                merged[kind] += count

    # the reference's trace is held while each other backend runs: half the working set each
    for start, units, _ in inputs.chunks(execute.samples_per_chunk(net, execute.WORKING_SET_BYTES // 2)):
        chunk = inputs.network_input(net, units)
        expected = modules[REFERENCE].run_export(export, chunk)
        count_overflow(REFERENCE, expected)
        for name in names[1:]:
            actual = modules[name].run_export(export, chunk)
            count_overflow(name, actual)
            counts = count_mismatches(net, expected, actual)
            mismatches[name] = counts if mismatches[name] is None else \
                {k: mismatches[name][k] + counts[k] for k in counts}
            difference = _first_difference(net, expected, actual)
            if difference is not None and (first is None or start + difference["sample"] < first["sample"]):
                local = difference["sample"]
                first = _describe(difference, name, expected, actual, local)
                first["sample"] = start + local
            del actual   # before the next backend runs
        checked = start + chunk.shape[1]
        progress(checked, inputs.count)
        if first is not None:
            break
    equivalent = first is None
    report = {"equivalent": equivalent, "backends": names, "samples": int(inputs.count),
              "inputs": inputs.origin, "target": manifest["target"], "mismatches": mismatches,
              "overflow_events": overflow}
    if not equivalent:
        sample_inputs = inputs.network_input(net, inputs.units(first["sample"], first["sample"] + 1))
        first["membrane_history"] = _membrane_history(
            export, {n: modules[n] for n in (REFERENCE, first["backend"])}, sample_inputs,
            first["layer"], first["neuron"])
        first.update(_save_input(save_path, sample_inputs))
        report["first_divergence"] = first
        report["samples_checked"] = int(checked)
    folded = export.float_network
    if inputs.labels is not None and folded is not None:
        report["fidelity"] = fidelity(folded, net, inputs)
    return report
