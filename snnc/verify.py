"""`snnc verify`: run several backends on the same inputs and find the first divergence.

The integer reference is the definition; every other backend's trace (in logical time) is compared
with it: every layer's spikes at every step, then the readout. The first divergence is the earliest
sample, then the earliest step, then the earliest layer in network order, then the lowest neuron
index; it comes with the membrane history of that neuron from every backend that exposes it, and
the offending input is saved so the case can be replayed with `--input`.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from snnc import compiler
from snnc.backends import get_backend
from snnc.errors import InputError
from snnc.execute import Trace
from snnc.ir import Network

REFERENCE = "reference"
CHUNK = 100


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


def _membrane_history(net: Network, modules: dict, inputs: np.ndarray, layer: str, neuron: int) -> dict:
    """The membrane of one neuron at every step, from each backend that records voltages."""
    history = {}
    if layer == "readout":
        layer = net.output_node.name
    for name, module in modules.items():
        try:
            trace = module.run(net, inputs, record_voltages=(layer,))
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


def load_inputs(net: Network, manifest: dict, data: Optional[str], samples: Optional[int],
                input_file: Optional[str]) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """Encoded inputs [T, B, ...] with labels (None for a replayed input file) and their origin."""
    if input_file is None:
        data = data or manifest.get("data", "mnist5k")
        inputs, labels = compiler.test_inputs(net, data, samples)
        return inputs, labels, data
    try:
        with np.load(input_file, allow_pickle=False) as archive:
            inputs = archive["inputs"]
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{input_file}: not an snnc verify input file ({error})")
    expected = (net.T,) + tuple(net.input_node.shape)
    if inputs.ndim != len(expected) + 1 or (inputs.shape[0],) + inputs.shape[2:] != expected:
        raise InputError(f"{input_file}: inputs shaped {list(inputs.shape)}, the network needs "
                         f"[{net.T}, batch, {', '.join(map(str, net.input_node.shape))}]")
    return inputs.astype(np.int64), None, str(input_file)


def verify(outdir, backends: list[str], data: Optional[str] = None, samples: Optional[int] = None,
           input_file: Optional[str] = None, save_input: str = "snnc-verify-input.npz",
           progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Compare `backends` against the integer reference on the same inputs; a JSON-able report."""
    net, manifest = compiler.load_export(outdir)
    names = [REFERENCE] + [b for b in backends if b != REFERENCE]
    modules = {name: get_backend(name) for name in names}
    inputs, labels, origin = load_inputs(net, manifest, data, samples, input_file)
    total = inputs.shape[1]
    mismatches = {name: None for name in names[1:]}
    first = None
    overflow: dict[str, dict[str, dict[str, int]]] = {}  # backend -> layer -> kind -> events

    def count_overflow(name, trace):
        for layer, events in trace.overflow.items():
            merged = overflow.setdefault(name, {}).setdefault(layer, {"current": 0, "voltage": 0})
            for kind, count in events.items():
                merged[kind] += count

    for start in range(0, total, CHUNK):
        chunk = inputs[:, start:start + CHUNK]
        expected = modules[REFERENCE].run(net, chunk)
        count_overflow(REFERENCE, expected)
        for name in names[1:]:
            actual = modules[name].run(net, chunk)
            count_overflow(name, actual)
            counts = count_mismatches(net, expected, actual)
            mismatches[name] = counts if mismatches[name] is None else \
                {k: mismatches[name][k] + counts[k] for k in counts}
            difference = _first_difference(net, expected, actual)
            if difference is not None and (first is None or start + difference["sample"] < first["sample"]):
                local = difference["sample"]
                first = _describe(difference, name, expected, actual, local)
                first["sample"] = start + local
        progress(min(start + CHUNK, total), total)
        if first is not None:
            break
    equivalent = first is None
    report = {"equivalent": equivalent, "backends": names, "samples": int(total), "inputs": origin,
              "target": manifest["target"], "mismatches": mismatches, "overflow_events": overflow}
    if not equivalent:
        sample_inputs = inputs[:, first["sample"]:first["sample"] + 1]
        layer = first["layer"]
        first["membrane_history"] = _membrane_history(net, {n: modules[n] for n in (REFERENCE, first["backend"])},
                                                      sample_inputs, layer, first["neuron"])
        np.savez(save_input, inputs=sample_inputs)
        first["saved_input"] = str(save_input)
        report["first_divergence"] = first
        report["samples_checked"] = int(min(total, (first["sample"] // CHUNK + 1) * CHUNK))
    folded = compiler.load_float_export(outdir)
    if labels is not None and folded is not None:  # direct encoding: every step holds the image itself
        report["fidelity"] = compiler.fidelity(folded, net, inputs[0], labels)
    return report
