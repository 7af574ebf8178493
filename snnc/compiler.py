"""The compile pipeline, as a Python API (the CLI only calls these).

An export runs in this order, so that every problem is found before the work it would waste:
read the source (frontend) -> open the data (shapes and values checked) -> fold, quantize, bound
analysis -> artifact writers (the core mapping first: the design rules) -> fidelity -> manifest.
The export directory's format (manifest, staging, hashing, loading) is snnc.export_dir; each
backend registers the files it adds there. Every file is deterministic.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from snnc import __version__, export_dir, ir, passes
from snnc.errors import InputError, UsageError
from snnc.frontends.checkpoint import PIXEL_ENCODING
from snnc.targets import Target, load_target
from snnc.verify import fidelity

NO_DATA = "none"   # --data none: export everything, measure no fidelity


@dataclass
class Source:
    """What a frontend read: the network as the source defines it (float, or fixed point for a
    netx file) and the data a checkpoint was trained on (None when the source does not say)."""

    name: str
    network: ir.Network
    data: Optional[str]


@dataclass
class Compiled:
    """Every stage of one compilation, for export, inspection and tests.

    float_net and folded are None for a source that is already fixed point (a netx network).
    data: the data the source was trained on (a checkpoint's), None when the source does not say.
    """

    source: str
    float_net: Optional[ir.Network]
    folded: Optional[ir.Network]
    fixed: ir.Network
    target: Target
    bounds: list[dict]
    data: Optional[str] = None


# The modules whose artifact writers (snnc.export_dir.artifact_writer) every export runs; imported
# only when an export runs, so that the compiler itself loads no backend.
ARTIFACT_MODULES = (
    "snnc.passes.mapping",
    "snnc.backends.onnx_backend",
    "snnc.exporters.nir_export",
    "snnc.exporters.netx_export",
    "snnc.backends.lava_backend",
)


def read_source(path, target: str | Target = "loihi2", options: dict | None = None) -> Source:
    """Read a checkpoint (.pt), a NIR graph (.nir), a lava-dl netx network (.net), or (path None,
    options model, weights, T, input_shape, readout) the user's PyTorch module.

    options (NIR): T, dt, readout, input_scale, nir_semantics (a producer profile) and nir_assume
    (the choices its graph does not record); (netx) T, netx_input (how input neurons are driven),
    netx_timing, and input_shape for a file without an input layer that starts with a conv layer. The network's input shape always comes from the
    source itself.
    """
    options = dict(options or {})
    target = target if isinstance(target, Target) else load_target(target)
    if options.get("model") is not None or path is None:
        return _read_module(path, options)
    if options.get("weights") is not None:
        raise UsageError("--weights goes with --model FILE.py:FACTORY")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".nir" and (options.get("nir_semantics") or options.get("nir_assume")):
        raise UsageError("--nir-semantics and --nir-assume apply only to a NIR graph (.nir)")
    if suffix != ".net" and (options.get("netx_input") or options.get("netx_timing")):
        raise UsageError("--netx-input and --netx-timing apply only to a lava-dl netx file (.net)")
    if options.get("input_shape") is not None and suffix != ".net":
        raise UsageError("--input-shape applies only to a netx file (.net) without an input layer "
                         "that starts with a conv layer; this source defines its own input")
    if suffix == ".net":
        from snnc.frontends.netx import load_netx

        return Source(path.name, load_netx(path, T=options.get("T"), target=target,
                                           input_shape=options.get("input_shape"),
                                           input_drive=options.get("netx_input") or "bias",
                                           timing=options.get("netx_timing")), None)
    if suffix == ".nir":
        from snnc.frontends.nir_frontend import load_nir

        encoding = None
        if options.get("input_scale") is not None:
            encoding = dict(PIXEL_ENCODING, scale=float(options["input_scale"]))
        return Source(path.name, load_nir(path, T=options.get("T"), dt=options.get("dt"), encoding=encoding,
                                          readout=options.get("readout"), semantics=options.get("nir_semantics"),
                                          assume=options.get("nir_assume")), None)
    from snnc.frontends.checkpoint import load_network

    float_net, checkpoint = load_network(path)
    return Source(path.name, float_net, checkpoint.get("training", {}).get("data"))


def _read_module(path, options: dict) -> Source:
    """A PyTorch module from the user's factory (--model FILE.py:FACTORY) and weights (--weights)."""
    from snnc.frontends.torch_module import load_module

    if path is not None or options.get("model") is None:
        raise UsageError("give either SOURCE or --model FILE.py:FACTORY (with --weights), not both")
    for key, flag in (("nir_semantics", "--nir-semantics"), ("nir_assume", "--nir-assume"),
                      ("netx_input", "--netx-input"), ("netx_timing", "--netx-timing"), ("dt", "--dt"),
                      ("input_scale", "--input-scale")):
        if options.get(key):
            raise UsageError(f"{flag} does not apply to --model")
    if options.get("T") is None or options.get("input_shape") is None:
        raise UsageError("--model needs --T (steps per sample) and --input-shape (the module's input, e.g. 1,28,28)")
    network = load_module(options["model"], options.get("weights"), options["input_shape"], options["T"],
                          options.get("readout") or "mean")
    return Source(options["model"], network, None)


def source_files(source, options: dict | None = None) -> list[Path]:
    """The files a source is read from: SOURCE, or --model's file and --weights."""
    options = options or {}
    if source is not None:
        return [Path(source)]
    files = [Path(options["model"].rpartition(":")[0])]
    return files + ([Path(options["weights"])] if options.get("weights") else [])


def source_semantics(network: ir.Network) -> dict | None:
    """How an imported graph was read (a NIR graph's producer profile, a netx file's timing and input
    drive) and what was assumed."""
    for key in ("nir", "netx"):
        info = network.metadata.get(key)
        if isinstance(info, dict) and "semantics" in info:
            return info["semantics"]
    return None


def compile_read(source: Source, target: Target, bn_into: str = "neuron") -> Compiled:
    """Fold, quantize and bound-check what read_source read (a fixed-point source: bounds only)."""
    if source.network.fixed:
        return Compiled(source=source.name, float_net=None, folded=None, fixed=source.network, target=target,
                        bounds=passes.bound_analysis(source.network), data=source.data)
    return compile_network(source.network, target, source=source.name, data=source.data, bn_into=bn_into)


def compile_source(path, target: str | Target = "loihi2", options: dict | None = None) -> Compiled:
    """read_source, then compile_read. options: bn_into ('neuron'/'weights') and read_source's."""
    options = dict(options or {})
    target = target if isinstance(target, Target) else load_target(target)
    return compile_read(read_source(path, target, options), target, options.get("bn_into", "neuron"))


def compile_network(float_net: ir.Network, target: Target, source: str = "", data: Optional[str] = None,
                    bn_into: str = "neuron") -> Compiled:
    """Fold, quantize and bound-check a float network for `target`."""
    folded = passes.fold_all(float_net, bn_into=bn_into)
    fixed = passes.quantize(folded, target)
    return Compiled(source=source, float_net=float_net, folded=folded, fixed=fixed, target=target,
                    bounds=passes.bound_analysis(fixed), data=data)


def compile_checkpoint(path, target: str | Target = "loihi2", bn_into: str = "neuron") -> Compiled:
    return compile_source(path, target, {"bn_into": bn_into})


def default_data(net: ir.Network, trained_on: Optional[str] = None) -> str:
    """The data an export measures fidelity on when --data is not given: what the checkpoint was
    trained on, else the first native built-in data set whose samples fit the network's input (the
    layout rule, snnc.data.fits_layout)."""
    from snnc.data import BUILTINS, NATIVE, fits_layout, load_dataset

    shape = tuple(net.input_node.shape)
    if trained_on and (trained_on not in BUILTINS or fits_layout(load_dataset(trained_on).input_shape, shape)):
        return trained_on
    for name in NATIVE:
        if fits_layout(load_dataset(name).input_shape, shape):
            return name
    raise InputError(f"the network's input {list(shape)} fits no built-in data set: pass --data FILE, "
                     f"--data random or --data {NO_DATA}")


def open_data(net: ir.Network, data: Optional[str], trained_on: Optional[str] = None,
              samples: Optional[int] = None):
    """The checked InputSet an export measures fidelity on, its first `samples` (default: all;
    None for --data none)."""
    from snnc.data import InputSpec, open_inputs

    if data == NO_DATA:
        return None
    spec = InputSpec.of(net)
    if data:
        return open_inputs(data, spec, samples)
    chosen = default_data(net, trained_on)
    try:
        return open_inputs(chosen, spec, samples)
    except InputError as error:
        if chosen != trained_on:
            raise
        raise InputError(f"{error} (the data the checkpoint was trained on; pass --data)") from None


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


def export(source, outdir, target: str | Target = "loihi2", force: bool = False, options: dict | None = None,
           progress: Callable[[str], None] = lambda message: None) -> dict:
    """Compile `source` into the export directory `outdir` (atomically); returns a summary.

    options: read_source's and bn_into, onnx_spikes, float_onnx, netx; data: what fidelity is
    measured on (open_inputs' names, or 'none' for no fidelity; default: default_data); samples:
    how many of them (default: all).
    """
    outdir = export_dir.check_directory_output(outdir, force)
    options = dict(options or {})
    target = target if isinstance(target, Target) else load_target(target)
    progress("reading the source")
    read = read_source(source, target, options)
    inputs = open_data(read.network, options.get("data"), read.data, options.get("samples"))
    source_digest = {path.name: export_dir.sha256(path) for path in source_files(source, options)}
    source_digest = next(iter(source_digest.values())) if source is not None else source_digest
    semantics = source_semantics(read.network)
    progress("compiling")
    compiled = compile_read(read, target, options.get("bn_into", "neuron"))
    for module in ARTIFACT_MODULES:
        importlib.import_module(module)
    with export_dir.stage_directory(outdir, force=force) as staging:
        written = []
        for writer in export_dir.artifact_writers():
            progress(f"writing {writer.label}")
            written += writer.write(compiled, staging, options)
        written += [path.name for path in ir.save(compiled.fixed, staging)]
        written.append(_copy_target(compiled.target, staging))
        if compiled.folded is not None:
            (staging / export_dir.FLOAT_DIR).mkdir()
            written += [f"{export_dir.FLOAT_DIR}/{path.name}"
                        for path in ir.save(compiled.folded, staging / export_dir.FLOAT_DIR)]
        if inputs is None:
            report = {"measured": False, "reason": f"exported with --data {NO_DATA}"}
        else:
            progress(f"measuring fidelity on {inputs.count} samples of {inputs.origin}")
            report = {"measured": True, **fidelity(compiled.folded, compiled.fixed, inputs)}
        export_dir.write_json(staging / "fidelity.json", report)
        export_dir.write_json(staging / "bounds.json", compiled.bounds)
        written += ["fidelity.json", "bounds.json"]
        export_dir.write_manifest(staging, {
            "snnc_version": __version__, "network": compiled.fixed.name, "target": compiled.target.name,
            "source": compiled.source, "source_sha256": source_digest,
            "data": None if inputs is None else inputs.origin,
            "input": {"shape": ["T", "batch"] + list(compiled.fixed.input_node.shape),
                      "T": compiled.fixed.T, "dtype": "int64", **compiled.fixed.encoding},
            "readout": compiled.fixed.readout, "source_semantics": semantics}, written)
    overflowing = [b["layer"] for b in compiled.bounds if b["current_overflow"] or b["voltage_overflow"]]
    return {"outdir": str(outdir), "target": compiled.target.name,
            "files": sorted(written) + [export_dir.MANIFEST],
            "data": report.get("data"), "samples": report.get("samples"), "fidelity_measured": report["measured"],
            "float_accuracy": report.get("float_accuracy"), "quantized_accuracy": report.get("quantized_accuracy"),
            "prediction_agreement": report.get("prediction_agreement"),
            "layers_that_may_overflow": overflowing,
            "warnings": [] if semantics is None else semantics["warnings"]}
