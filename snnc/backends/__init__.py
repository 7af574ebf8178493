"""Backends: every way snnc can execute a fixed-point network, behind one interface.

A backend is a module with `NAME`, `run(net, inputs, record_voltages=())` (build from the IR in
memory) and `run_export(export, inputs, record_voltages=())` (run the files an export directory
ships, read through snnc.export_dir.ExportDir), both returning a snnc.execute.Trace: `inputs` are
the integer input units [T, B, ...] of one chunk (snnc.data.InputSet.network_input), and the trace
is in logical time (a backend with pipeline latency aligns its results before returning them).
`verify` compares the exported artifacts of any set of backends against the integer reference.
Whatever runs many samples takes them from an InputSet chunk by chunk (export_inputs), in chunks
of snnc.execute.samples_per_chunk(net), and keeps only what it needs of each chunk's trace.
"""
import importlib

BACKENDS = {
    "reference": "snnc.backends.reference",
    "onnx": "snnc.backends.onnx_backend",
    "onnx-step": "snnc.backends.onnx_step",
    "lava": "snnc.backends.lava_backend",
    "cycle": "snnc.backends.cycle",
}


def get_backend(name: str):
    """The backend module called `name` (imported lazily: lava and onnxruntime are slow to load)."""
    from snnc.errors import InputError

    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}' (known: {', '.join(BACKENDS)})")
    return importlib.import_module(BACKENDS[name])


def export_inputs(export, data: str | None = None, samples: int | None = None):
    """The inputs a command runs an export on (an snnc.data.InputSet): `data` (--data), else the
    data the export names in its manifest; an export made with --data none names none."""
    from snnc.data import InputSpec, open_inputs
    from snnc.errors import InputError

    data = data or export.manifest.get("data")
    if data is None:
        raise InputError(f"{export.root}: the export names no data (it was made with --data none); pass --data")
    return open_inputs(data, InputSpec.of(export.network), samples)


def run_on_backend(outdir, backend: str, data: str | None = None, samples: int | None = None) -> dict:
    """`snnc run`: an export directory's artifacts on one backend over its inputs, chunk by chunk;
    the accuracy (None when the inputs have no labels)."""
    from snnc import execute
    from snnc.export_dir import ExportDir

    module = get_backend(backend)
    export = ExportDir.open(outdir)
    net = export.network
    inputs = export_inputs(export, data, samples)
    correct = 0
    for _, units, labels in inputs.chunks(execute.samples_per_chunk(net)):
        trace = module.run_export(export, inputs.network_input(net, units))
        if labels is not None:
            correct += int((trace.predictions == labels).sum())
    return {"backend": backend, "data": inputs.origin, "samples": int(inputs.count),
            "accuracy": None if inputs.labels is None else correct / inputs.count,
            "target": export.manifest["target"]}
