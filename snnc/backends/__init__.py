"""Backends: every way snnc can execute a fixed-point network, behind one interface.

A backend is a module with `NAME`, `run(net, inputs, record_voltages=())` (build from the IR in
memory) and `run_export(export, inputs, record_voltages=())` (run the files an export directory
ships, read through snnc.export_dir.ExportDir), both returning a snnc.execute.Trace: `inputs` are
the encoded integer inputs [T, B, ...] (snnc.execute.encode), and the trace is in logical time (a
backend with pipeline latency aligns its results before returning them). `verify` compares the
exported artifacts of any set of backends against the integer reference.
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


def run_on_backend(outdir, backend: str, data: str | None = None, samples: int | None = None) -> dict:
    """`snnc run`: an export directory's artifacts on one backend over test samples; accuracy."""
    from snnc import execute
    from snnc.data import dataset_images
    from snnc.export_dir import ExportDir

    module = get_backend(backend)
    export = ExportDir.open(outdir)
    net = export.network
    data = data or export.manifest.get("data", "mnist5k")
    images, labels = dataset_images(net.input_node.shape, data, samples)
    trace = module.run_export(export, execute.encode(net, images))
    return {"backend": backend, "data": data, "samples": int(len(labels)),
            "accuracy": float((trace.predictions == labels).mean()), "target": export.manifest["target"]}
