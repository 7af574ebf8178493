"""The ONNX backend: the fixed-point network as a spike-exact ONNX graph, run by onnxruntime.

- `write_artifacts(compiled, directory, options)`: the export hook. Writes model.onnx (all T steps;
  every spiking layer's spikes as extra outputs when options['onnx_spikes']), model_step.onnx (one
  step with explicit state), model_spikes.onnx (model.onnx with every layer's spikes, for verify,
  when model.onnx does not output them) and, when options['float_onnx'], model_float.onnx (the
  folded network in float32, approximate).
- `run(net, inputs)`: the backend interface (builds the model in memory, runs onnxruntime's CPU
  provider, returns a Trace in logical time).
- `run_file(path, inputs, chunk)`: run a written model.onnx; `run_export(export, inputs)`: the
  backend interface on an export's files (readout from model.onnx, spikes from the model that has
  them). Both call onnxruntime on chunks of snnc.execute.samples_per_chunk(net) samples.
- `initial_state(net, batch)`, `run_steps(path_or_model, inputs)`: streaming with model_step.onnx.

The graph construction lives in snnc/onnx_graph.py; docs/onnx.md describes the files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from snnc import execute, fixedpoint, onnx_graph
from snnc.errors import CheckFailed, InputError
from snnc.execute import Trace
from snnc.export_dir import artifact_writer
from snnc.ir import READOUTS, Network

NAME = "onnx"
MODEL = "model.onnx"
STEP_MODEL = "model_step.onnx"
SPIKES_MODEL = "model_spikes.onnx"
FLOAT_MODEL = "model_float.onnx"


# --- export --------------------------------------------------------------------------------------

def _write(model, path: Path) -> None:
    try:
        onnx_graph.check(model)
    except Exception as error:  # onnx raises several checker/inference error types
        raise CheckFailed(f"{path.name}: the ONNX checker rejected the generated model ({error})")
    path.write_bytes(onnx_graph.serialize(model))


@artifact_writer("ONNX models", order=20)
def write_artifacts(compiled, directory, options: dict) -> list[str]:
    """Write model.onnx, model_step.onnx (and model_spikes.onnx, model_float.onnx) into
    `directory`; deterministic bytes."""
    directory = Path(directory)
    options = options or {}
    with_spikes = bool(options.get("onnx_spikes"))
    _write(onnx_graph.fixed_model(compiled.fixed, spikes=with_spikes), directory / MODEL)
    _write(onnx_graph.fixed_model(compiled.fixed, stepwise=True), directory / STEP_MODEL)
    written = [MODEL, STEP_MODEL]
    if not with_spikes:
        _write(onnx_graph.fixed_model(compiled.fixed, spikes=True), directory / SPIKES_MODEL)
        written.append(SPIKES_MODEL)
    if options.get("float_onnx"):
        if compiled.folded is None:
            raise InputError("--float-onnx needs a float network; this source is already fixed point")
        _write(onnx_graph.float_model(compiled.folded, spikes=bool(options.get("onnx_spikes"))),
               directory / FLOAT_MODEL)
        written.append(FLOAT_MODEL)
    return written


# --- running -------------------------------------------------------------------------------------

def session(model):
    """An onnxruntime CPU session for a ModelProto, serialized bytes or a path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # idle worker threads sleep instead of spinning: on a shared 2-core machine spinning threads
    # steal the cores that the busy ones need (measured up to 2x slower under load)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if hasattr(model, "SerializeToString"):
        model = onnx_graph.serialize(model)
    elif not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise InputError(f"{path}: no such ONNX model")
        model = str(path)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types
        raise InputError(f"cannot load the ONNX model: {str(error).splitlines()[0]}")


def _check_inputs(inputs, expected: list) -> np.ndarray:
    inputs = np.asarray(inputs)
    if not np.issubdtype(inputs.dtype, np.integer):
        raise InputError(f"ONNX inputs must be integers (the encoded input), got {inputs.dtype}")
    if inputs.ndim != len(expected) or any(isinstance(d, int) and d != s for d, s in zip(expected, inputs.shape)):
        shown = ["batch" if not isinstance(d, int) else d for d in expected]
        raise InputError(f"ONNX input must have shape {shown}, got {list(inputs.shape)}")
    return inputs.astype(np.int64, copy=False)


def run_session(sess, inputs, chunk: int | None = None) -> Trace:
    """Run a model.onnx-style session on encoded inputs [T, B, ...], `chunk` samples per call (the
    graph holds a chunk's every layer at once; callers that know the network pass
    snnc.execute.samples_per_chunk(net); None: all in one call)."""
    spec = sess.get_inputs()[0]
    inputs = _check_inputs(inputs, list(spec.shape))
    names = [output.name for output in sess.get_outputs()]
    if onnx_graph.READOUT not in names:
        raise InputError("the ONNX model has no 'readout' output: not an snnc model.onnx")
    chunk = inputs.shape[1] if chunk is None else max(1, int(chunk))
    parts = [sess.run(names, {spec.name: np.ascontiguousarray(inputs[:, start:start + chunk])})
             for start in range(0, inputs.shape[1], chunk)]
    results = {name: np.concatenate([part[i] for part in parts], axis=1 if name != onnx_graph.READOUT else 0)
               for i, name in enumerate(names)}
    readout = results.pop(onnx_graph.READOUT)
    steps = results.pop(onnx_graph.READOUT_STEPS, None)
    return Trace(spikes=results, readout_steps=steps, readout=readout)


def run(net: Network, inputs, record_voltages=()) -> Trace:
    """The backend interface: build model.onnx with every layer's spikes in memory and run it.
    Voltages are not exposed by the graph ({}), nor are overflow counts ({})."""
    if not net.fixed:
        raise InputError("the ONNX backend runs fixed-point networks; quantize first")
    return run_session(session(onnx_graph.fixed_model(net, spikes=True)), inputs,
                       execute.samples_per_chunk(net))


def run_file(path, inputs, chunk: int | None = None) -> Trace:
    """Run a written model.onnx on encoded inputs [T, B, ...], `chunk` samples per call; spikes
    only if it was exported with them."""
    return run_session(session(path), inputs, chunk)


def run_export(export, inputs, record_voltages=()) -> Trace:
    """The export's model.onnx as written (its readout), with every layer's spikes from the
    exported model that outputs them (model.onnx itself with --onnx-spikes, else model_spikes.onnx).
    Voltages are not exposed ({})."""
    chunk = execute.samples_per_chunk(export.network)
    trace = run_file(export.path(MODEL), inputs, chunk)
    if trace.spikes:
        return trace
    spiking = run_file(export.path(SPIKES_MODEL), inputs, chunk)
    return Trace(spikes=spiking.spikes, readout_steps=spiking.readout_steps, readout=trace.readout)


# --- streaming with model_step.onnx ----------------------------------------------------------------

def initial_state(net: Network, batch: int) -> dict[str, np.ndarray]:
    """model_step.onnx's state inputs before the first step: u = 0 and v = the initial state
    (IMP) per CUBA layer, sigma = the initial state and act = residue = 0 per sigma-delta layer
    (onnx_graph.neuron_states), broadcast to `batch` samples (int64); zeros for a recurrent
    layer's last spikes and a delayed synapse's input history (onnx_graph.extra_states)."""
    state = {}
    for node in net.nodes:
        if node.neuron is not None:
            shape = (batch,) + tuple(node.shape)
            state.update({name: np.ascontiguousarray(np.broadcast_to(value, shape))
                          for name, _, value in onnx_graph.neuron_states(node)})
    for name, _, dtype, shape in onnx_graph.extra_states(net):
        state[name] = np.zeros((batch,) + shape, dtype)
    return state


def run_steps(model, inputs, state: dict | None = None) -> Trace:
    """Drive model_step.onnx (path, bytes or ModelProto) over encoded inputs [T, B, ...], one step
    per call, starting from `state` (default: the model's own initial state). The readout is the
    sum of readout_step over the steps ('mean') or the last one ('last'), as model.onnx computes."""
    sess = session(model)
    meta = sess.get_modelmeta().custom_metadata_map
    if meta.get("snnc.kind") != "step":
        raise InputError("not an snnc model_step.onnx")
    if meta.get("snnc.readout", "mean") not in READOUTS:
        raise InputError(f"model_step.onnx: readout {meta['snnc.readout']!r} is not one of {READOUTS}")
    inputs = np.asarray(inputs).astype(np.int64, copy=False)
    outputs = [output.name for output in sess.get_outputs()]
    carried = {name: "state." + name[len("next."):] for name in outputs if name.startswith("next.")}
    state = dict(state or {})
    spikes: dict[str, list] = {}
    readout_steps = []
    for t in range(inputs.shape[0]):
        result = dict(zip(outputs, sess.run(outputs, {onnx_graph.INPUT: inputs[t], **state})))
        state = {carried[name]: result[name] for name in carried}
        readout_steps.append(result[onnx_graph.READOUT_STEP])
        for name, value in result.items():
            if name != onnx_graph.READOUT_STEP and name not in carried:
                spikes.setdefault(name, []).append(value)
    steps = np.stack(readout_steps)
    return Trace(spikes={name: np.stack(values) for name, values in spikes.items()},
                 readout_steps=steps, readout=fixedpoint.readout(steps, meta.get("snnc.readout", "mean")))
