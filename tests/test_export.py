"""`snnc export`, `snnc inspect` and `snnc run`: the export directory and its guarantees."""
import hashlib
import json
import subprocess
import sys

import pytest

import netfactory
from snnc import compiler, export_dir
from snnc.errors import InputError, OutputError
from snnc.train import save_checkpoint
from snnc.export_dir import ExportDir

SNNC = [sys.executable, "-m", "snnc.cli"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "random_srif.pt"
    save_checkpoint(path, netfactory.random_model(netfactory.recipe("mnist_srif"), seed=1),
                    {"data": "mnist5k", "loss": "tet-s", "epochs": 0, "seed": 1, "test_accuracy": 0.0})
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("export") / "srif"
    result = subprocess.run(SNNC + ["export", str(checkpoint), "-o", str(outdir), "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return outdir, json.loads(result.stdout)


def test_export_directory_contents(exported):
    outdir, summary = exported
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["target"] == "loihi2" and manifest["input"]["T"] == 4
    assert {"network.json", "network.npz", "fidelity.json", "float/network.json"} <= set(manifest["files"])
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((outdir / name).read_bytes()).hexdigest() == digest
    text = (outdir / "manifest.json").read_text()
    assert str(outdir.parent) not in text and "time" not in text.lower()
    fidelity = json.loads((outdir / "fidelity.json").read_text())
    assert fidelity["samples"] == 1000
    assert set(fidelity["spike_agreement"]) == {"conv1", "conv2", "fc1"}
    assert summary["float_accuracy"] == fidelity["float_accuracy"]
    net = ExportDir.open(outdir).network
    assert net.fixed and net.metadata["target"] == "loihi2"


def test_tampered_export_is_refused(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported[0], copy)
    (copy / "network.json").write_text((copy / "network.json").read_text().replace('"T": 4', '"T": 5'))
    with pytest.raises(InputError, match="network.json.*SHA-256"):
        ExportDir.open(copy)


def test_run_reference_matches_fidelity(exported):
    outdir, _ = exported
    result = subprocess.run(SNNC + ["run", str(outdir), "--backend", "reference", "--json"],
                            capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    fidelity = json.loads((outdir / "fidelity.json").read_text())
    assert report["samples"] == 1000 and report["accuracy"] == fidelity["quantized_accuracy"]


def test_inspect_shows_every_layer(exported, checkpoint):
    outdir, _ = exported
    table = subprocess.run(SNNC + ["inspect", str(outdir)], capture_output=True, text=True, check=True).stdout
    for layer in ("conv1", "pool1", "conv2", "fc1", "readout"):
        assert layer in table
    assert "soft IF init-state" in table and "weight_bits" in table
    float_view = subprocess.run(SNNC + ["inspect", str(checkpoint)], capture_output=True, text=True,
                                check=True).stdout
    assert "MPR" in float_view and "fixed point for loihi2" in float_view


def test_existing_output_is_refused_and_failures_leave_nothing(checkpoint, tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(OutputError, match="already exists"):
        compiler.export(checkpoint, target)
    monkeypatch.setitem(export_dir._WRITERS, "broken", export_dir.ArtifactWriter("broken", 0, sys.exit))
    with pytest.raises(BaseException):
        compiler.export(checkpoint, tmp_path / "never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_is_reproducible(checkpoint, tmp_path):
    for name in ("a", "b"):
        subprocess.run(SNNC + ["export", str(checkpoint), "-o", str(tmp_path / name)], check=True,
                       capture_output=True)
    files = json.loads((tmp_path / "a" / "manifest.json").read_text())["files"]
    for name in list(files) + ["manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_interrupted_export_leaves_no_directory(checkpoint, tmp_path):
    import signal
    import time

    process = subprocess.Popen(SNNC + ["export", str(checkpoint), "-o", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.partial-*")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "export finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and stderr.strip() == "error: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_directories_are_created(checkpoint, tmp_path):
    outdir = tmp_path / "out" / "nested" / "srif"
    compiler.export(checkpoint, outdir)
    assert (outdir / "manifest.json").is_file()
    assert [p.name for p in outdir.parent.iterdir()] == ["srif"]
