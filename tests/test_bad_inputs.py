"""Hostile and broken inputs: one line on stderr, a documented exit code, no traceback, no output."""
import os

import pytest
import torch

import netfactory
from clicheck import assert_clean_failure, invoke
from snnc.train import save_checkpoint

INPUT, TARGET, OUTPUT = 3, 4, 6  # docs/errors.md


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
