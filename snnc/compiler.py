"""The compile pipeline and the export directory, as a Python API (the CLI only calls these).

checkpoint -> float IR (frontend) -> fold passes -> quantize for a target -> bound analysis ->
artifacts. Export writes into a staging directory next to the destination and renames it at the
end, so an interrupted export never leaves a partial directory; every file is deterministic.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from snnc import __version__, execute, ir, passes
from snnc.errors import InputError, OutputError
from snnc.frontends.checkpoint import PIXEL_ENCODING
from snnc.targets import Target, load_target

MANIFEST = "manifest.json"
FLOAT_DIR = "float"


@dataclass
class Compiled:
    """Every stage of one compilation, for export, inspection and tests.

    float_net and folded are None for a source that is already fixed point (a netx network).
    """

    source: str
    float_net: Optional[ir.Network]
    folded: Optional[ir.Network]
    fixed: ir.Network
    target: Target
    bounds: list[dict]
    data: str


# Artifact writers add backend files (ONNX, Lava, core mapping) to the staging directory, as
# "module:function" names imported only when an export runs:
# function(compiled, directory, options) -> list of paths written, relative to `directory`.
ARTIFACT_WRITERS: list[tuple[str, str]] = [
    ("core mapping", "snnc.passes.mapping:write_artifacts"),
    ("ONNX models", "snnc.backends.onnx_backend:write_artifacts"),
    ("NIR graph", "snnc.exporters.nir_export:write_artifact"),
    ("netx network", "snnc.exporters.netx_export:write_artifact"),
    ("Lava process graph", "snnc.backends.lava_backend:write_artifacts"),
]


def _writer(spec: str):
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def _dataset_shape(data: str) -> tuple[int, ...]:
    from snnc.data import load_dataset

    return tuple(load_dataset(data).test_images.shape[1:])


def compile_source(path, target: str | Target = "loihi2", options: dict | None = None) -> Compiled:
    """Compile a checkpoint (.pt), a NIR graph (.nir) or a lava-dl netx network (.net).

    options: bn_into ('neuron'/'weights'); for NIR and netx sources also data (whose test inputs the
    network takes, default mnist5k), T, dt, readout and input_scale (NIR).
    """
    options = dict(options or {})
    target = target if isinstance(target, Target) else load_target(target)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".net":
        from snnc.frontends.netx import load_netx

        data = options.get("data") or "mnist5k"
        fixed = load_netx(path, T=options.get("T"), target=target, input_shape=_dataset_shape(data))
        return Compiled(source=path.name, float_net=None, folded=None, fixed=fixed, target=target,
                        bounds=passes.bound_analysis(fixed), data=data)
    if suffix == ".nir":
        from snnc.frontends.nir_frontend import load_nir

        data = options.get("data") or "mnist5k"
        encoding = None
        if options.get("input_scale") is not None:
            encoding = dict(PIXEL_ENCODING, scale=float(options["input_scale"]))
        float_net = load_nir(path, T=options.get("T"), dt=options.get("dt"), input_shape=_dataset_shape(data),
                             encoding=encoding, readout=options.get("readout"))
    else:
        from snnc.frontends.checkpoint import load_network

        float_net, checkpoint = load_network(path)
        data = options.get("data") or checkpoint.get("training", {}).get("data", "mnist5k")
    return compile_network(float_net, target, source=path.name, data=data,
                           bn_into=options.get("bn_into", "neuron"))


def compile_network(float_net: ir.Network, target: Target, source: str = "", data: str = "mnist5k",
                    bn_into: str = "neuron") -> Compiled:
    """Fold, quantize and bound-check a float network for `target`."""
    folded = passes.fold_all(float_net, bn_into=bn_into)
    fixed = passes.quantize(folded, target)
    return Compiled(source=source, float_net=float_net, folded=folded, fixed=fixed, target=target,
                    bounds=passes.bound_analysis(fixed), data=data)


def compile_checkpoint(path, target: str | Target = "loihi2", bn_into: str = "neuron") -> Compiled:
    return compile_source(path, target, {"bn_into": bn_into})


def fidelity(folded: ir.Network, fixed: ir.Network, images: np.ndarray, labels: np.ndarray) -> dict:
    """Float (folded, float64) against quantized: accuracy of each and per-layer spike agreement."""
    float_trace = execute.run(folded, execute.encode(folded, images))
    fixed_trace = execute.run(fixed, execute.encode(fixed, images))
    agreement = {name: float((float_trace.spikes[name] == spikes).mean())
                 for name, spikes in fixed_trace.spikes.items()}
    return {
        "samples": int(len(labels)),
        "float_accuracy": float((float_trace.predictions == labels).mean()),
        "quantized_accuracy": float((fixed_trace.predictions == labels).mean()),
        "prediction_agreement": float((float_trace.predictions == fixed_trace.predictions).mean()),
        "spike_agreement": agreement,
        "overflow_events": fixed_trace.overflow,
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _staging_dir(outdir: Path) -> Path:
    """A fresh hidden directory next to `outdir` (its parents created as `mkdir -p` would)."""
    try:
        outdir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-", dir=outdir.parent))
    except OSError as error:
        raise OutputError(f"cannot write {outdir}: {error.strerror or error}")


def export(source, outdir, target: str = "loihi2", force: bool = False, options: dict | None = None,
           progress: Callable[[str], None] = lambda message: None) -> dict:
    """Compile `source` (a checkpoint) into the export directory `outdir`; returns a summary."""
    from snnc.data import load_dataset

    outdir = Path(outdir)
    if outdir.exists() and not force:
        raise OutputError(f"{outdir} already exists (use --force to replace it)")
    options = dict(options or {})
    progress("compiling")
    compiled = compile_source(source, target, options)
    progress("measuring fidelity")
    dataset = load_dataset(compiled.data)
    if compiled.folded is None:  # already fixed point: only the integer network's accuracy exists
        predictions = execute.run(compiled.fixed, execute.encode(compiled.fixed, dataset.test_images)).predictions
        report = {"samples": int(len(dataset.test_labels)), "float_accuracy": None,
                  "quantized_accuracy": float((predictions == dataset.test_labels).mean()),
                  "note": "the source is already fixed point: there is no float network to compare"}
    else:
        report = fidelity(compiled.folded, compiled.fixed, dataset.test_images, dataset.test_labels)
    report["data"] = compiled.data
    staging = _staging_dir(outdir)
    try:
        written = [path.name for path in ir.save(compiled.fixed, staging)]
        if compiled.folded is not None:
            (staging / FLOAT_DIR).mkdir()
            written += [f"{FLOAT_DIR}/{path.name}" for path in ir.save(compiled.folded, staging / FLOAT_DIR)]
        _write_json(staging / "fidelity.json", report)
        _write_json(staging / "bounds.json", compiled.bounds)
        written += ["fidelity.json", "bounds.json"]
        for name, spec in ARTIFACT_WRITERS:
            progress(f"writing {name}")
            written += _writer(spec)(compiled, staging, options)
        manifest = {
            "format": "snnc-export", "format_version": 1, "snnc_version": __version__,
            "network": compiled.fixed.name, "target": compiled.target.name, "source": compiled.source,
            "source_sha256": sha256(source), "data": compiled.data,
            "input": {"shape": ["T", "batch"] + list(compiled.fixed.input_node.shape),
                      "T": compiled.fixed.T, "dtype": "int64", **compiled.fixed.encoding},
            "readout": compiled.fixed.readout,
            "files": {name: sha256(staging / name) for name in sorted(written)},
        }
        _write_json(staging / MANIFEST, manifest)
        if outdir.exists():
            shutil.rmtree(outdir)
        os.rename(staging, outdir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    overflowing = [b["layer"] for b in compiled.bounds if b["current_overflow"] or b["voltage_overflow"]]
    return {"outdir": str(outdir), "target": compiled.target.name, "files": sorted(written) + [MANIFEST],
            "float_accuracy": report["float_accuracy"], "quantized_accuracy": report["quantized_accuracy"],
            "layers_that_may_overflow": overflowing}


def load_float_export(outdir) -> Optional[ir.Network]:
    """The folded float network saved next to the fixed one (checked by load_export first), or None
    for a source that had no float form."""
    directory = Path(outdir) / FLOAT_DIR
    return ir.load(directory) if directory.is_dir() else None


def load_export(outdir) -> tuple[ir.Network, dict]:
    """The fixed network and manifest of an export directory; checks every file's SHA-256."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise InputError(f"{outdir} is not an export directory")
    try:
        manifest = json.loads((outdir / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{outdir}: missing or unreadable {MANIFEST}")
    for name, digest in files.items():
        path = outdir / name
        if not path.is_file() or sha256(path) != digest:
            raise InputError(f"{outdir}: {name} is missing or was modified (SHA-256 mismatch)")
    return ir.load(outdir), manifest


def test_images(net: ir.Network, data: str, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `samples` test images of a data set (checked against the network's input) and labels."""
    from snnc.data import load_dataset

    dataset = load_dataset(data)
    count = len(dataset.test_labels) if samples is None else samples
    if count < 1:
        raise InputError("--samples must be at least 1")
    images, labels = dataset.test_images[:count], dataset.test_labels[:count]
    if tuple(images.shape[1:]) != tuple(net.input_node.shape):
        raise InputError(f"data set {data} has inputs {list(images.shape[1:])}, the network expects "
                         f"{list(net.input_node.shape)}")
    return images, labels


def test_inputs(net: ir.Network, data: str, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `samples` test images of a data set, encoded for `net`, and their labels."""
    images, labels = test_images(net, data, samples)
    return execute.encode(net, images), labels


def run_backend(outdir, backend: str, data: str | None = None, samples: int | None = None) -> dict:
    """Run an export directory on one backend over test digits and report accuracy."""
    from snnc.backends import get_backend

    module = get_backend(backend)
    net, manifest = load_export(outdir)
    data = data or manifest.get("data", "mnist5k")
    inputs, labels = test_inputs(net, data, samples)
    trace = module.run_export(outdir, inputs) if hasattr(module, "run_export") else module.run(net, inputs)
    return {"backend": backend, "data": data, "samples": int(len(labels)),
            "accuracy": float((trace.predictions == labels).mean()), "target": manifest["target"]}
