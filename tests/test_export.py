"""`snnc export`, `snnc inspect` and `snnc run`: the export directory and its guarantees."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snnc import compiler, export_dir
from snnc.errors import InputError, OutputError
from snnc.export_dir import ExportDir

SNNC = [sys.executable, "-m", "snnc.cli"]
CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "mnist_srif.pt"
pytestmark = pytest.mark.slow   # every test exports a shipped checkpoint or reads its export


def test_export_directory_contents(srif_export_and_summary):
    outdir, summary = srif_export_and_summary
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["target"] == "loihi2" and manifest["input"]["T"] == 4
    assert {"network.json", "network.npz", "fidelity.json", "float/network.json"} <= set(manifest["files"])
    for name, digest in manifest["files"].items():     # hashed here, not by the code under test
        assert hashlib.sha256((outdir / name).read_bytes()).hexdigest() == digest, name
    text = (outdir / "manifest.json").read_text()
    assert str(outdir.parent) not in text and "time" not in text.lower()
    fidelity = json.loads((outdir / "fidelity.json").read_text())
    assert fidelity["measured"] and fidelity["samples"] == 1000
    assert manifest["data"] == fidelity["data"] == "mnist5k"     # the data the checkpoint was trained on
    assert set(fidelity["spike_agreement"]) == {"conv1", "conv2", "fc1"}
    assert summary["float_accuracy"] == fidelity["float_accuracy"]
    net = ExportDir.open(outdir).network
    assert net.fixed and net.metadata["target"] == "loihi2"


def test_tampered_export_is_refused(srif_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(srif_export, copy)
    (copy / "network.json").write_text((copy / "network.json").read_text().replace('"T": 4', '"T": 5'))
    with pytest.raises(InputError, match="network.json.*SHA-256"):
        ExportDir.open(copy)


def test_run_reference_matches_fidelity(srif_export):
    outdir = srif_export
    result = subprocess.run(SNNC + ["run", str(outdir), "--backend", "reference", "--json"],
                            capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    fidelity = json.loads((outdir / "fidelity.json").read_text())
    assert report["samples"] == 1000 and report["accuracy"] == fidelity["quantized_accuracy"]


def test_inspect_shows_every_layer(srif_export):
    table = subprocess.run(SNNC + ["inspect", str(srif_export)], capture_output=True, text=True, check=True).stdout
    for layer in ("conv1", "pool1", "conv2", "fc1", "readout"):
        assert layer in table
    assert "soft IF init-state" in table and "weight_bits" in table
    float_view = subprocess.run(SNNC + ["inspect", str(CHECKPOINT)], capture_output=True, text=True,
                                check=True).stdout
    assert "MPR" in float_view and "fixed point for loihi2" in float_view


def test_existing_output_is_refused_and_failures_leave_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(OutputError, match="already exists"):
        compiler.export(CHECKPOINT, target)
    monkeypatch.setitem(export_dir._WRITERS, "broken", export_dir.ArtifactWriter("broken", 0, sys.exit))
    with pytest.raises(BaseException):
        compiler.export(CHECKPOINT, tmp_path / "never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_is_reproducible_and_creates_missing_parents(srif_export, tmp_path):
    """A second export (another process, a nested path whose parents do not exist) has the same bytes."""
    again = tmp_path / "out" / "nested" / "srif"
    subprocess.run(SNNC + ["export", str(CHECKPOINT), "-o", str(again)], check=True, capture_output=True)
    assert [p.name for p in again.parent.iterdir()] == ["srif"]
    files = json.loads((srif_export / "manifest.json").read_text())["files"]
    assert sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file()) \
        == sorted(list(files) + ["manifest.json"])
    for name in list(files) + ["manifest.json"]:
        assert (again / name).read_bytes() == (srif_export / name).read_bytes(), name


def test_interrupted_export_leaves_no_directory(tmp_path):
    import signal
    import time

    process = subprocess.Popen(SNNC + ["export", str(CHECKPOINT), "-o", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.partial-*")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "export finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and stderr.strip() == "error: interrupted"
    assert list(tmp_path.iterdir()) == []
