"""The `snnc` command line: parsing, progress and exit codes only.

Every command imports its implementation lazily so that `snnc --help` never loads torch or lava.
"""
import functools
import json
import sys

import click

from snnc.data import DATASETS, NONE, RANDOM
from snnc.errors import SnncError


INTERRUPTED = 130
# What --data accepts, for every command that reads inputs (docs/data.md).
DATA_HELP = (f"Inputs: a built-in data set ({', '.join(DATASETS)}), an .npz/.h5 file or "
             f"{RANDOM}[:N[:SEED]] (export also: {NONE}).")


def data_help(detail: str) -> str:
    return f"{DATA_HELP} {detail}"


_SIGNALLED = []   # set once SIGTERM arrived, even where the KeyboardInterrupt it raised was swallowed


def interrupt_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt so that cleanup (the export's staging directory) runs."""
    import signal

    def interrupt(signum, frame):
        _SIGNALLED.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def reports_errors(command):
    """Turn SnncError into one line on stderr and its exit code, never a traceback; SIGTERM and
    Ctrl-C end the command with exit 130 after its cleanup ran. A KeyboardInterrupt raised where
    Python ignores exceptions (a finalizer of a library's object) still ends in exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _SIGNALLED.clear()
        try:
            interrupt_on_sigterm()
            result = command(*args, **kwargs)
        except SnncError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            _SIGNALLED.append(None)
        if _SIGNALLED:
            click.echo("error: interrupted", err=True)
            sys.exit(INTERRUPTED)
        return result

    return wrapper


def print_json(obj):
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


@click.group()
@click.version_option(package_name="snnc")
def main():
    """snnc: compile trained spiking neural networks for Loihi-style neuromorphic hardware."""


@main.command()
@click.argument("recipe")
@click.option("--data", default="mnist5k", show_default=True,
              help=data_help("A built-in's train split or a whole file; needs labels."))
@click.option("--loss", type=click.Choice(["sdt", "tet", "tet-s", "lts"]), required=True,
              help="Objective: sdt, tet, tet-s (TET with label smoothing) or lts (last time step).")
@click.option("--epochs", type=click.IntRange(min=1), required=True)
@click.option("-o", "--output", required=True, help="Checkpoint file to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate (cosine-annealed to 0).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--shift", type=click.IntRange(min=0), default=0, show_default=True,
              help="Augment: translate training images randomly by up to this many pixels.")
@click.option("--tet-lambda", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of TET's MSE regulariser (losses tet and tet-s).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="CPU threads for torch.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Train on the first N training samples (default: all); a brief run.")
@click.option("--test-samples", type=click.IntRange(min=1), default=None,
              help="Test a built-in data set on its first N test samples (default: all).")
@click.option("--force", is_flag=True, help="Overwrite an existing snnc checkpoint.")
@reports_errors
def train(recipe, data, loss, epochs, output, seed, lr, batch_size, shift, tet_lambda, threads,
          samples, test_samples, force):
    """Train the network of RECIPE (models/*.yaml) and write a weights-only checkpoint.

    A built-in data set trains on its train split and reports its test split after each epoch; a
    file is used whole for training (measure it afterwards with `snnc eval --data`)."""
    import contextlib

    from snnc.data import BUILTINS, open_inputs
    from snnc.models import load_recipe
    from snnc.train import check_checkpoint_output, input_spec, labelled, save_checkpoint
    from snnc.train import train as train_model

    check_checkpoint_output(output, force)
    spec = load_recipe(recipe)
    train_set = labelled(open_inputs(data, input_spec(spec), samples, split="train"), "train")
    test_set = open_inputs(data, input_spec(spec), test_samples, split="test") if data in BUILTINS else None
    show_bar = sys.stderr.isatty()
    batches = epochs * -(-train_set.count // batch_size)

    def report_epoch(epoch, mean_loss, accuracy):
        if show_bar:
            click.echo(err=True)
        tested = "" if accuracy is None else f", test accuracy {accuracy:.4f}"
        click.echo(f"epoch {epoch}/{epochs}: loss {mean_loss:.4f}{tested}", err=True)

    bar = (click.progressbar(length=batches, label="training", file=sys.stderr) if show_bar
           else contextlib.nullcontext())
    with bar:
        model, accuracy = train_model(
            spec, train_set, test_set, loss, epochs, seed=seed, lr=lr, batch_size=batch_size, shift=shift,
            tet_lambda=tet_lambda, threads=threads,
            on_batch=(lambda: bar.update(1)) if show_bar else None, on_epoch=report_epoch)
    save_checkpoint(output, model, {"data": train_set.origin, "loss": loss, "epochs": epochs, "seed": seed,
                                    "lr": lr, "batch_size": batch_size, "shift": shift,
                                    "tet_lambda": tet_lambda, "samples": train_set.count,
                                    "test_accuracy": accuracy}, force=force)
    if test_set is None:
        click.echo(f"wrote {output}: trained on {train_set.count} samples of {train_set.origin} "
                   f"(no test split: measure with snnc eval --data)")
    else:
        click.echo(f"wrote {output}: trained on {train_set.count} samples, test accuracy {accuracy:.4f} "
                   f"on {test_set.count} {data} test samples")


def _input_shape(ctx, param, value):
    """--input-shape C,H,W (or N) as a tuple of positive integers."""
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise click.BadParameter(f"{value!r} is not C,H,W or N (positive integers)")
    return shape


def module_options(command):
    """--model, --weights: a PyTorch module as the source (snnc.frontends.torch_module)."""
    command = click.option("--weights", default=None, metavar="CKPT",
                           help="--model: its state dict (torch.load with weights_only=True).")(command)
    return click.option("--model", default=None, metavar="FILE.py:FACTORY",
                        help="A PyTorch module as the source: FACTORY() in FILE.py builds it (with --weights, "
                             "--T and --input-shape; SOURCE is then not given).")(command)


@main.command("eval")
@click.argument("checkpoint", required=False)
@module_options
@click.option("--T", "steps", type=click.IntRange(min=1), default=None, help="--model: time steps per sample.")
@click.option("--input-shape", default=None, callback=_input_shape, metavar="C,H,W", help="--model: its input.")
@click.option("--readout", type=click.Choice(["mean", "last"]), default=None, help="--model: readout mode.")
@click.option("--data", default=None,
              help=data_help("Default: the data the checkpoint was trained on. A built-in's test split or a "
                             "whole file; needs labels."))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def eval_command(checkpoint, model, weights, steps, input_shape, readout, data, as_json):
    """Measure the float accuracy of CHECKPOINT (or of the --model module, as snnc reads it) on data
    with labels."""
    from snnc.data import open_inputs
    from snnc.errors import InputError
    from snnc.train import evaluate, input_spec, labelled, load_checkpoint

    if model is not None or checkpoint is None:
        _eval_module(checkpoint, {"model": model, "weights": weights, "T": steps, "input_shape": input_shape,
                                  "readout": readout}, data, as_json)
        return
    model, contents = load_checkpoint(checkpoint)
    data = data or contents["training"].get("data")
    if data is None:
        raise InputError(f"checkpoint {checkpoint} does not name its data set; pass --data")
    recipe = model.recipe
    inputs = labelled(open_inputs(data, input_spec(recipe), split="test"), "eval")
    accuracy = evaluate(model, inputs)
    result = {"checkpoint": checkpoint, "data": inputs.origin, "accuracy": accuracy,
              "samples": inputs.count, "T": recipe["T"], "readout": recipe["readout"]}
    if as_json:
        print_json(result)
    else:
        click.echo(f"{checkpoint}: accuracy {accuracy:.4f} on {result['samples']} samples of {inputs.origin} "
                   f"(T={result['T']}, readout {result['readout']})")


def _eval_module(checkpoint, options: dict, data, as_json) -> None:
    """eval --model: the float network snnc reads from the module, on labelled data."""
    from snnc.compiler import open_data, read_source
    from snnc.errors import UsageError
    from snnc.train import labelled
    from snnc.verify import accuracy

    network = read_source(checkpoint, options=options).network
    inputs = open_data(network, data)   # default: the first built-in data set that fits its input
    if inputs is None:
        raise UsageError("eval needs data (--data none measures nothing)")
    inputs = labelled(inputs, "eval")
    result = {"model": options["model"], "data": inputs.origin, "accuracy": accuracy(network, inputs),
              "samples": inputs.count, "T": network.T, "readout": network.readout}
    if as_json:
        print_json(result)
    else:
        click.echo(f"{options['model']}: accuracy {result['accuracy']:.4f} on {result['samples']} samples of "
                   f"{inputs.origin} (T={result['T']})")


@main.group(invoke_without_command=True)
@click.pass_context
def targets(ctx):
    """List the hardware targets and energy tables (targets/*.yaml)."""
    if ctx.invoked_subcommand is None:
        from snnc.targets import available

        for name in available():
            click.echo(name)


@targets.command("show")
@click.argument("name")
@reports_errors
def targets_show(name):
    """Validate and print one target (a name, or a path to a YAML file)."""
    from snnc.targets import describe, load_energy_table, load_target

    text = describe(name)
    if "arithmetic:" in text:
        load_target(name)
    else:
        load_energy_table(name)
    click.echo(text.rstrip())


def _progress(as_json):
    """A stderr progress line for long steps, silent with --json or when not on a terminal."""
    if as_json or not sys.stderr.isatty():
        return lambda message: None
    return lambda message: click.echo(f"... {message}", err=True)


def _assumptions(ctx, param, values):
    """--nir-assume KEY=VALUE options as a dict."""
    assumed = {}
    for value in values:
        key, sep, choice = value.partition("=")
        if not sep or not key or not choice:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        assumed[key.strip()] = choice.strip()
    return assumed


def _accuracy(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _fidelity_line(summary) -> str:
    """What the export measured, for people: accuracies where the data has labels."""
    if not summary["fidelity_measured"]:
        return "no fidelity measured (--data none)"
    parts = [f"{kind} accuracy {summary[key]:.4f}" for kind, key in
             (("float", "float_accuracy"), ("quantized", "quantized_accuracy")) if summary[key] is not None]
    if summary["prediction_agreement"] is not None:
        parts.append(f"float and quantized predictions agree on {summary['prediction_agreement']:.4f}")
    if summary["quantized_accuracy"] is None:
        parts.insert(0, "no labels, no accuracy")
    return f"{', '.join(parts)} ({summary['samples']} samples of {summary['data']})"


@main.command()
@click.argument("source", required=False)
@module_options
@click.option("-o", "--output", required=True, help="Export directory to create.")
@click.option("--target", default="loihi2", show_default=True, help="Target name or YAML file.")
@click.option("--force", is_flag=True, help="Replace an existing snnc export directory (nothing else).")
@click.option("--bn-into", type=click.Choice(["neuron", "weights"]), default="neuron", show_default=True,
              help="Fold tdBN into per-channel thresholds (neuron) or into the weights.")
@click.option("--onnx-spikes", is_flag=True, help="model.onnx also outputs every layer's spikes.")
@click.option("--float-onnx", is_flag=True, help="Also write model_float.onnx (folded, unquantized).")
@click.option("--data", default=None,
              help=data_help("Fidelity is measured on it. Default: the data a checkpoint was trained on, "
                             "else the first built-in data set that fits the network's input."))
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Measure fidelity on the first N samples of the data (default: all).")
@click.option("--T", "steps", type=click.IntRange(min=1), default=None,
              help="Time steps per sample (NIR graphs, --model; netx files default to their own).")
@click.option("--dt", type=float, default=None, help="NIR: time step for tau and r (default: inferred).")
@click.option("--readout", type=click.Choice(["mean", "last"]), default=None,
              help="NIR, --model: readout mode (--model: the outputs summed over the steps, or the last step's).")
@click.option("--input-scale", type=float, default=None, help="NIR: input current per pixel unit (default 1/255).")
@click.option("--input-shape", default=None, callback=_input_shape, metavar="C,H,W",
              help="--model: the module's input; netx: the input of a file without an input layer that starts "
                   "with a conv layer.")
@click.option("--nir-semantics", default=None, metavar="NAME",
              help="NIR: the producer whose semantics the graph has (nir, snntorch, norse, sinabs, spikingjelly, "
                   "rockpool, spyx, lava-dl; default: the graph's metadata, else NIR's literal reading).")
@click.option("--nir-assume", multiple=True, callback=_assumptions, metavar="KEY=VALUE",
              help="NIR: a choice the graph does not record (reset=zero|subtract, spikes=single|multi); repeatable.")
@click.option("--netx-input", type=click.Choice(["bias", "spikes"]), default=None,
              help="netx: input neurons take the image as their bias (default) or input spikes.")
@click.option("--netx-timing", type=click.Choice(["layer-reset", "free-running"]), default=None,
              help="netx: each layer starts a sample at rest (layer-reset, default: slayer, netx with "
                   "reset_interval) or Lava's netx network runs without reset (free-running).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@reports_errors
def export(source, model, weights, output, target, force, bn_into, onnx_spikes, float_onnx, data, samples,
           steps, dt, readout, input_scale, input_shape, nir_semantics, nir_assume, netx_input, netx_timing,
           as_json):
    """Compile SOURCE (a checkpoint .pt, a NIR graph .nir or a lava-dl netx .net), or the PyTorch
    module of --model, and write the export directory."""
    from snnc.compiler import export as export_source

    options = {"bn_into": bn_into, "onnx_spikes": onnx_spikes, "float_onnx": float_onnx, "data": data,
               "samples": samples, "T": steps, "dt": dt, "readout": readout, "input_scale": input_scale,
               "input_shape": input_shape, "nir_semantics": nir_semantics, "nir_assume": nir_assume,
               "netx_input": netx_input,
               "netx_timing": netx_timing, "model": model, "weights": weights}
    summary = export_source(source, output, target=target, force=force, options=options,
                            progress=_progress(as_json))
    if as_json:
        print_json(summary)
        return
    for warning in summary["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {summary['outdir']} for {summary['target']}: {_fidelity_line(summary)}")
    for layer in summary["layers_that_may_overflow"]:
        click.echo(f"warning: layer '{layer}' may leave the target's state range (see bounds.json)", err=True)


@main.command()
@click.argument("path", required=False)
@click.option("--target", default="loihi2", show_default=True,
              help="Target for a source's fixed-point view (an export uses its own).")
@module_options
@click.option("--T", "steps", type=click.IntRange(min=1), default=None, help="--model: time steps per sample.")
@click.option("--input-shape", default=None, callback=_input_shape, metavar="C,H,W", help="--model: its input.")
@click.option("--readout", type=click.Choice(["mean", "last"]), default=None, help="--model: readout mode.")
@reports_errors
def inspect(path, target, model, weights, steps, input_shape, readout):
    """Per-layer table of a checkpoint (float and quantized), a --model module or an export directory."""
    from pathlib import Path

    from snnc.summary import describe_network

    if path is not None and Path(path).is_dir():
        from snnc.export_dir import ExportDir
        from snnc.passes.mapping import format_mapping, load_mapping

        export = ExportDir.open(path)
        click.echo(describe_network(export.network))
        click.echo("\n" + format_mapping(load_mapping(export)))
        return
    from snnc.compiler import compile_source

    compiled = compile_source(path, target, {"model": model, "weights": weights, "T": steps,
                                             "input_shape": input_shape, "readout": readout})
    if compiled.float_net is not None:
        click.echo(describe_network(compiled.float_net))
        click.echo()
    click.echo(describe_network(compiled.fixed))


@main.command("run")
@click.argument("outdir")
@click.option("--backend", default="reference", show_default=True,
              help="reference, onnx, onnx-step, lava or cycle.")
@click.option("--data", default=None, help=data_help("Default: the export's."))
@click.option("--samples", type=int, default=None, help="Number of samples (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def run_command(outdir, backend, data, samples, as_json):
    """Run an export directory on one backend and report its accuracy."""
    from snnc.backends import run_on_backend

    result = run_on_backend(outdir, backend, data, samples)
    if as_json:
        print_json(result)
    else:
        click.echo(f"{backend}: accuracy {_accuracy(result['accuracy'])} on {result['samples']} samples of "
                   f"{result['data']}")


def _progress_bar(as_json, label):
    """A click progress bar on stderr for long runs, or nothing (--json, or not a terminal)."""
    if as_json or not sys.stderr.isatty():
        return None
    return click.progressbar(length=1, label=label, file=sys.stderr)


@main.command()
@click.argument("outdir")
@click.option("--backends", default="reference,onnx,onnx-step,lava,cycle", show_default=True,
              help="Comma-separated backends whose exported files are compared with the integer reference.")
@click.option("--data", default=None, help=data_help("Default: the export's."))
@click.option("--samples", type=int, default=None, help="Number of samples (default: all).")
@click.option("--input", "input_file", default=None, help="Replay an input saved by a failed verify.")
@click.option("--save-input", default="snnc-verify-input.npz", show_default=True,
              help="Where to save the input of the first divergence.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def verify(outdir, backends, data, samples, input_file, save_input, as_json):
    """Check that the exported artifacts compute the integer reference's spikes exactly; exit 1 if not."""
    from snnc.errors import CheckFailed
    from snnc.verify import verify as run_verify

    bar = _progress_bar(as_json, "verifying")

    def progress(done, total):
        if bar is not None:
            bar.length = total
            bar.update(done - bar.pos)

    try:
        report = run_verify(outdir, [b.strip() for b in backends.split(",") if b.strip()], data=data,
                            samples=samples, input_file=input_file, save_input=save_input, progress=progress)
    finally:
        if bar is not None:
            bar.render_finish()
    if as_json:
        print_json(report)
    else:
        _print_verify(report)
    if not report["equivalent"]:
        raise CheckFailed(f"backends diverge: {_divergence_line(report['first_divergence'])}")


def _divergence_line(first):
    where = "readout" if first["layer"] == "readout" else f"layer '{first['layer']}' step {first['step']}"
    values = ", ".join(f"{k}={v}" for k, v in first["values"].items())
    saved = (f"input saved to {first['saved_input']}" if first.get("saved_input")
             else f"input not saved: {first.get('save_error')}")
    return (f"sample {first['sample']}, {where}, neuron {first['neuron']} {first['neuron_index']}: "
            f"{values} ({saved})")


def _print_verify(report):
    click.echo(f"backends: {', '.join(report['backends'])} on {report['samples']} samples of {report['inputs']}")
    for backend, counts in report["mismatches"].items():
        total = sum(counts.values()) if counts else 0
        click.echo(f"  {backend}: {'identical' if total == 0 else f'{total} mismatches {counts}'}")
    if "fidelity" in report:
        f = report["fidelity"]
        click.echo(f"fidelity: float accuracy {_accuracy(f['float_accuracy'])}, "
                   f"quantized {_accuracy(f['quantized_accuracy'])}, "
                   f"per-layer spike agreement " +
                   ", ".join(f"{k} {v:.4f}" for k, v in f["spike_agreement"].items()))
    for backend, layers in report["overflow_events"].items():
        events = {layer: counts for layer, counts in layers.items() if sum(counts.values())}
        if events:
            click.echo(f"overflow events (saturation/wrap) in {backend}: {events}")
    if not report["equivalent"]:
        first = report["first_divergence"]
        click.echo(f"FIRST DIVERGENCE: {_divergence_line(first)}")
        for backend, history in first.get("membrane_history", {}).items():
            click.echo(f"  membrane of that neuron, {backend}: {history}")
    else:
        click.echo("equivalent: all backends identical to the integer reference")


@main.command()
@click.argument("outdir")
@click.option("--data", default=None, help=data_help("Default: the export's."))
@click.option("--samples", type=int, default=None, help="Number of samples (default: all).")
@click.option("--target", default=None, help="Price with this target's table (default: the export's).")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "markdown"]), default="table",
              show_default=True)
@click.option("--budget-uj", type=float, default=None, help="Fail when energy per sample exceeds this (uJ).")
@click.option("--baseline", default=None, help="A saved `--format json` report to compare with.")
@click.option("--max-regression", type=float, default=None,
              help="Fail when energy or SOPs grew more than this percentage over --baseline.")
@click.option("--plot", "plot_file", default=None, help="Draw per-layer energy and firing rates (PNG).")
@reports_errors
def energy(outdir, data, samples, target, output_format, budget_uj, baseline, max_regression, plot_file):
    """Operation counts, energy per sample and chip latency; optional CI gates (exit 1 on failure)."""
    from snnc import energy as energy_model

    energy_model.check_gate_limits(budget_uj, max_regression)
    if plot_file:
        energy_model.check_plot_path(plot_file)
    report = energy_model.energy_report(outdir, data=data, samples=samples, target=target)
    if output_format == "json":
        print_json(report)
    else:
        click.echo(energy_model.format_table(report, markdown=output_format == "markdown"))
    if plot_file:
        energy_model.plot(report, plot_file)
    energy_model.gate(report, budget_uj=budget_uj, baseline=baseline, max_regression=max_regression)


@main.command()
@click.argument("outdir")
@click.option("--data", default=None, help=data_help("Default: the export's."))
@click.option("--samples", type=int, default=None, help="Number of samples (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def simulate(outdir, data, samples, as_json):
    """Run an export on the cycle-level multicore simulator: accuracy, counts, latency, throughput."""
    from snnc.backends.cycle import simulate_outdir

    report = simulate_outdir(outdir, data, samples)
    if as_json:
        print_json(report)
        return
    click.echo(f"{report['network']} on {report['target']}: {report['cores_used']} cores, "
               f"{report['samples']} samples" + ("" if report["accuracy"] is None else f", accuracy {report['accuracy']:.4f}"))
    click.echo(f"latency {report['latency_us_per_sample']:.2f} us per sample, "
               f"{report['chip_samples_per_second']:,.0f} samples/s on the chip (modelled)")
    for layer, counts in report["counts"]["per_sample"].items():
        click.echo(f"  {layer}: " + ", ".join(f"{k} {v:,.1f}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
