"""The compile pipeline, as a Python API (the CLI only calls these).

source -> float IR (frontend) -> fold passes -> quantize for a target -> bound analysis ->
artifacts. The export directory's format (manifest, staging, hashing, loading) is snnc.export_dir;
each backend registers the files it adds there. Every file is deterministic.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from snnc import __version__, export_dir, ir, passes
from snnc.errors import InputError
from snnc.frontends.checkpoint import PIXEL_ENCODING
from snnc.targets import Target, load_target
from snnc.verify import fidelity


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


# The modules whose artifact writers (snnc.export_dir.artifact_writer) every export runs; imported
# only when an export runs, so that the compiler itself loads no backend.
ARTIFACT_MODULES = (
    "snnc.passes.mapping",
    "snnc.backends.onnx_backend",
    "snnc.exporters.nir_export",
    "snnc.exporters.netx_export",
    "snnc.backends.lava_backend",
)


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


def _copy_target(target: Target, staging: Path) -> str:
    """Copy the target description into the export, so that every later command prices and maps
    with exactly the target the network was compiled for."""
    try:
        text = Path(target.source_path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read target file {target.source_path}: {error.strerror or error}")
    copy = staging / export_dir.TARGET_FILE
    copy.write_bytes(text)
    copied = load_target(copy)
    if dataclasses.replace(copied, source_path="") != dataclasses.replace(target, source_path=""):
        raise InputError(f"target file {target.source_path} changed during the export")
    return export_dir.TARGET_FILE


def export(source, outdir, target: str = "loihi2", force: bool = False, options: dict | None = None,
           progress: Callable[[str], None] = lambda message: None) -> dict:
    """Compile `source` into the export directory `outdir` (atomically); returns a summary."""
    from snnc.data import InputSpec, open_inputs

    outdir = export_dir.check_directory_output(outdir, force)
    options = dict(options or {})
    progress("compiling")
    compiled = compile_source(source, target, options)
    source_digest = export_dir.sha256(source)
    for module in ARTIFACT_MODULES:
        importlib.import_module(module)
    with export_dir.stage_directory(outdir, force=force) as staging:
        written = [path.name for path in ir.save(compiled.fixed, staging)]
        written.append(_copy_target(compiled.target, staging))
        for writer in export_dir.artifact_writers():
            progress(f"writing {writer.label}")
            written += writer.write(compiled, staging, options)
        progress("measuring fidelity")
        inputs = open_inputs(compiled.data, InputSpec.of(compiled.fixed))
        report = fidelity(compiled.folded, compiled.fixed, inputs)
        if compiled.folded is not None:
            (staging / export_dir.FLOAT_DIR).mkdir()
            written += [f"{export_dir.FLOAT_DIR}/{path.name}"
                        for path in ir.save(compiled.folded, staging / export_dir.FLOAT_DIR)]
        export_dir.write_json(staging / "fidelity.json", report)
        export_dir.write_json(staging / "bounds.json", compiled.bounds)
        written += ["fidelity.json", "bounds.json"]
        export_dir.write_manifest(staging, {
            "snnc_version": __version__, "network": compiled.fixed.name, "target": compiled.target.name,
            "source": compiled.source, "source_sha256": source_digest, "data": compiled.data,
            "input": {"shape": ["T", "batch"] + list(compiled.fixed.input_node.shape),
                      "T": compiled.fixed.T, "dtype": "int64", **compiled.fixed.encoding},
            "readout": compiled.fixed.readout}, written)
    overflowing = [b["layer"] for b in compiled.bounds if b["current_overflow"] or b["voltage_overflow"]]
    return {"outdir": str(outdir), "target": compiled.target.name,
            "files": sorted(written) + [export_dir.MANIFEST],
            "float_accuracy": report["float_accuracy"], "quantized_accuracy": report["quantized_accuracy"],
            "layers_that_may_overflow": overflowing}
