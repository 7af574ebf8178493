"""Backends: every way snnc can execute a fixed-point network, behind one interface.

A backend is a module with `NAME` and `run(net, inputs, record_voltages=()) -> snnc.execute.Trace`:
`inputs` are the encoded integer inputs [T, B, ...] (snnc.execute.encode), and the trace is in
logical time (a backend with pipeline latency aligns its results before returning them). `verify`
compares the traces of any set of backends against the integer reference.
"""
import importlib

BACKENDS = {
    "reference": "snnc.backends.reference",
    "onnx": "snnc.backends.onnx_backend",
    "lava": "snnc.backends.lava_backend",
    "cycle": "snnc.backends.cycle",
}


def get_backend(name: str):
    """The backend module called `name` (imported lazily: lava and onnxruntime are slow to load)."""
    from snnc.errors import InputError

    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}' (known: {', '.join(BACKENDS)})")
    return importlib.import_module(BACKENDS[name])
