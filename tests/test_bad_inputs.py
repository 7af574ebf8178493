"""Hostile and broken inputs: one line on stderr, a documented exit code, no traceback, no output."""
import importlib
import os
from pathlib import Path

import pytest
import torch
import yaml

import netfactory
from clicheck import assert_clean_failure, invoke
from snnc import compiler, export_dir, passes
from snnc.train import save_checkpoint

USAGE, INPUT, TARGET, DESIGN_RULE, OUTPUT = 2, 3, 4, 5, 6  # docs/errors.md
LOIHI2 = Path(__file__).resolve().parent.parent / "targets" / "loihi2.yaml"
# an 8x8 network (the digits' shape) and what the mnist5k digits are: data that does not fit it
TINY = dict(netfactory.recipe("mnist_lif", input_shape=[1, 8, 8], arch_params={"channels": [4, 8], "hidden": 16}),
            name="tiny-8x8")
MISFIT = ("[1, 28, 28]", "[1, 8, 8]")


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.pt"
    save_checkpoint(path, netfactory.random_model(netfactory.recipe("mnist_lif"), seed=2),
                    {"data": "mnist5k", "loss": "lts", "epochs": 0, "seed": 2, "test_accuracy": 0.0})
    return path


class Payload:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_executing_checkpoint_is_refused(tmp_path, good_checkpoint):
    marker = tmp_path / "pwned"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    checkpoint["training"]["note"] = Payload(str(marker))
    hostile = tmp_path / "hostile.pt"
    torch.save(checkpoint, hostile)
    result = invoke("export", hostile, "-o", tmp_path / "out")
    assert_clean_failure(result, INPUT, "pickled Python objects")
    assert not marker.exists(), "the checkpoint ran code"
    assert not (tmp_path / "out").exists()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, fragment", [
    (lambda p, good: _write(p / "random.pt", os.urandom(4096)), "not a readable torch file"),
    (lambda p, good: _write(p / "truncated.pt", good.read_bytes()[:2000]), "not a readable torch file"),
    (lambda p, good: _write(p / "empty.pt", b""), "not a readable torch file"),
    (lambda p, good: p, "is a directory"),
    (lambda p, good: p / "missing.pt", "not found"),
])
def test_unreadable_checkpoints(tmp_path, good_checkpoint, make, fragment):
    result = invoke("export", make(tmp_path, good_checkpoint), "-o", tmp_path / "out")
    assert_clean_failure(result, INPUT, fragment)
    assert not (tmp_path / "out").exists()


def _altered(tmp_path, good_checkpoint, change):
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    change(checkpoint)
    path = tmp_path / "altered.pt"
    torch.save(checkpoint, path)
    return path


def _first_weight(checkpoint):
    return next(key for key in checkpoint["state_dict"] if key.endswith("synapse.weight"))


@pytest.mark.parametrize("change, fragment", [
    (lambda c: c["state_dict"].pop(_first_weight(c)), "missing tensor"),
    (lambda c: c["state_dict"].update(extra=torch.zeros(3)), "unexpected tensor extra"),
    (lambda c: c["state_dict"].update({_first_weight(c): torch.zeros(2, 2)}), "has shape"),
    (lambda c: c["state_dict"].update({_first_weight(c): c["state_dict"][_first_weight(c)].to(torch.int32)}), "dtype"),
    (lambda c: c["state_dict"][_first_weight(c)].view(-1).__setitem__(0, float("nan")), "NaN or Inf"),
    (lambda c: c["recipe"]["neuron"].update(vth=float("inf")), "vth"),
    (lambda c: c["recipe"].update(T=0), "T"),
    (lambda c: c.pop("recipe"), "missing key"),
])
def test_checkpoint_that_does_not_match_its_recipe(tmp_path, good_checkpoint, change, fragment):
    result = invoke("export", _altered(tmp_path, good_checkpoint, change), "-o", tmp_path / "out")
    assert_clean_failure(result, INPUT, fragment)
    assert not (tmp_path / "out").exists()


def test_bad_target_and_data(tmp_path, good_checkpoint):
    assert_clean_failure(invoke("export", good_checkpoint, "-o", tmp_path / "o", "--target", "loihi7"),
                         TARGET, "unknown target")
    broken = _write(tmp_path / "bad.yaml", b"name: x\narithmetic: {weight_bits: eight}\n")
    assert_clean_failure(invoke("export", good_checkpoint, "-o", tmp_path / "o", "--target", broken),
                         TARGET, "arithmetic.weight_bits")
    assert_clean_failure(invoke("eval", good_checkpoint, "--data", "cifar99"), INPUT, "cifar99")


@pytest.mark.slow   # the output errors come after a full compilation
def test_bad_outputs(tmp_path, good_checkpoint):
    (tmp_path / "exists").mkdir()
    assert_clean_failure(invoke("export", good_checkpoint, "-o", tmp_path / "exists"), OUTPUT, "already exists")
    (tmp_path / "a_file").write_text("")
    assert_clean_failure(invoke("export", good_checkpoint, "-o", tmp_path / "a_file" / "out"),
                         OUTPUT, "cannot write")


@pytest.mark.slow   # the output error comes after a full compilation
def test_unwritable_output_directory(tmp_path, good_checkpoint):
    if os.geteuid() == 0:  # root may write to any mode; /proc refuses new entries even to root
        locked = "/proc"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    assert_clean_failure(invoke("export", good_checkpoint, "-o", f"{locked}/out"), OUTPUT, "cannot write")


def test_zero_samples_and_missing_export(tmp_path):
    assert_clean_failure(invoke("run", tmp_path / "nothing"), INPUT, "not an export directory")


@pytest.mark.slow   # a full export
def test_overflowing_checkpoint_is_reported_and_counted(tmp_path):
    """Every pixel pushes conv1's membranes down: after a few steps of the worst case they pass the
    24-bit range. The bound analysis says so at export; the simulators count the saturations."""
    model = netfactory.random_model(netfactory.recipe("mnist_lif"), seed=4)
    with torch.no_grad():
        model.nodes[0].synapse.weight.copy_(-model.nodes[0].synapse.weight.abs() - 0.5)
    path = tmp_path / "loud.pt"
    save_checkpoint(path, model, {"data": "mnist5k", "loss": "lts", "epochs": 0, "seed": 4, "test_accuracy": 0.0})
    out = tmp_path / "out"
    result = invoke("export", path, "-o", out)
    assert result.exit_code == 0, result.output
    assert "warning: layer 'conv1' may leave the target's state range" in result.stderr
    import json

    bounds = {entry["layer"]: entry for entry in json.loads((out / "bounds.json").read_text())}
    assert bounds["conv1"]["voltage_overflow"] and bounds["conv1"]["max_abs_voltage"] > bounds["conv1"]["limit"]
    report = invoke("verify", out, "--backends", "reference,cycle", "--samples", 20, "--json")
    assert report.exit_code == 0, report.output
    events = json.loads(report.stdout)["overflow_events"]
    assert events["reference"]["conv1"]["voltage"] > 0
    assert events["cycle"]["conv1"] == events["reference"]["conv1"]


@pytest.mark.slow   # reads the export of a shipped checkpoint
def test_zero_samples_is_refused(lif_export):
    assert_clean_failure(invoke("run", lif_export, "--samples", 0), INPUT, "at least 1")
    assert_clean_failure(invoke("verify", lif_export, "--samples", 0), INPUT, "at least 1")


# --- data that does not fit the network, and the order in which an export fails --------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    save_checkpoint(path, netfactory.random_model(TINY, seed=1),
                    {"data": "digits", "loss": "lts", "epochs": 0, "seed": 1, "test_accuracy": 0.0})
    return path


def never(what):
    """A stand-in for a stage that must not run."""

    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran")

    return fail


def entries(directory):
    return sorted(p.name for p in directory.iterdir())


def test_export_with_data_that_does_not_fit_fails_before_compiling(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(passes, "fold_all", never("folding"))
    before = entries(tmp_path)
    result = invoke("export", tiny_checkpoint, "-o", tmp_path / "out", "--data", "mnist5k")
    assert_clean_failure(result, INPUT, *MISFIT)
    assert entries(tmp_path) == before


def test_train_and_eval_with_data_that_does_not_fit_fail_before_any_work(tmp_path, tiny_checkpoint, monkeypatch):
    import snnc.train

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    before = entries(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(snnc.train, "build", never("building the model to train"))
        assert_clean_failure(invoke("train", recipe, "--data", "mnist5k", "--loss", "lts", "--epochs", 1,
                                    "-o", tmp_path / "x.pt"), INPUT, *MISFIT)
    monkeypatch.setattr(snnc.train, "evaluate", never("evaluation"))
    assert_clean_failure(invoke("eval", tiny_checkpoint, "--data", "mnist5k"), INPUT, *MISFIT)
    assert entries(tmp_path) == before


def test_train_and_eval_need_labels(tmp_path, tiny_checkpoint, monkeypatch):
    import snnc.train

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    with monkeypatch.context() as patch:
        patch.setattr(snnc.train, "build", never("building the model to train"))
        assert_clean_failure(invoke("train", recipe, "--data", "random:8", "--loss", "lts", "--epochs", 1,
                                    "-o", tmp_path / "x.pt"), INPUT, "train needs data with labels", "random:8:0")
    monkeypatch.setattr(snnc.train, "evaluate", never("evaluation"))
    assert_clean_failure(invoke("eval", tiny_checkpoint, "--data", "random"), INPUT, "eval needs data with labels")
    assert not (tmp_path / "x.pt").exists()


def test_run_with_data_that_does_not_fit(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    assert invoke("export", tiny_checkpoint, "-o", out, "--data", "random:2").exit_code == 0
    assert_clean_failure(invoke("run", out, "--data", "mnist5k"), INPUT, *MISFIT)


def _small_target(path):
    """loihi2 with two cores of 64 neurons: the tiny network does not fit."""
    target = yaml.safe_load(LOIHI2.read_text())
    target["name"] = "two-small-cores"
    target["limits"].update(cores=2, neurons_per_core=64)
    path.write_text(yaml.safe_dump(target))
    return path


def test_a_network_that_does_not_fit_fails_at_the_mapping_before_any_other_writer_or_fidelity(
        tmp_path, tiny_checkpoint, monkeypatch):
    for module in compiler.ARTIFACT_MODULES:
        importlib.import_module(module)
    writers = export_dir.artifact_writers()
    assert writers[0].label == "core mapping"
    for writer in writers[1:]:
        monkeypatch.setitem(export_dir._WRITERS, writer.label,
                            export_dir.ArtifactWriter(writer.label, writer.order, never(writer.label)))
    monkeypatch.setattr(compiler, "fidelity", never("fidelity"))
    target = _small_target(tmp_path / "small.yaml")
    before = entries(tmp_path)
    result = invoke("export", tiny_checkpoint, "-o", tmp_path / "out", "--target", target)
    assert_clean_failure(result, DESIGN_RULE, "cores, the target has 2")
    assert entries(tmp_path) == before


def test_export_with_data_none_measures_nothing(tmp_path, tiny_checkpoint, monkeypatch):
    import json

    monkeypatch.setattr(compiler, "fidelity", never("fidelity"))
    out = tmp_path / "out"
    result = invoke("export", tiny_checkpoint, "-o", out, "--data", "none", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["fidelity_measured"] is False and summary["quantized_accuracy"] is None
    assert json.loads((out / "fidelity.json").read_text()) == {"measured": False,
                                                              "reason": "exported with --data none"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"] is None
    assert {"network.json", "float/network.json", "model.onnx", "mapping.json", "lava/graph.json",
            "network.nir"} <= set(manifest["files"])


def test_input_shape_is_refused_where_the_source_defines_its_input(tmp_path, tiny_checkpoint):
    assert_clean_failure(invoke("export", tiny_checkpoint, "-o", tmp_path / "out", "--input-shape", "1,8,8"),
                         USAGE, "--input-shape applies only to a netx file")
    netx = netfactory.netx_file(tmp_path / "net.net")
    assert_clean_failure(invoke("export", netx, "-o", tmp_path / "out", "--input-shape", "1,28,28"),
                         USAGE, "--input-shape applies only", "its input layer is [784]")
    result = invoke("export", netx, "-o", tmp_path / "out", "--input-shape", "28x28")
    assert result.exit_code == USAGE and "C,H,W" in result.output
    assert not (tmp_path / "out").exists()
