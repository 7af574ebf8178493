"""Shared fixtures: a tiny recipe on the 8x8 digits, fast enough to train inside a test, and ONE
export of each shipped checkpoint for the whole session (an export takes tens of seconds on 2 cores).

The shared exports are read-only: a test that changes an export directory copies it first
(shutil.copytree) and changes the copy.
"""
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture
def tiny_recipe():
    return {
        "name": "tiny-digits",
        "arch": "mnist_convnet",
        "arch_params": {"channels": [8, 16], "hidden": 32},
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "T": 2,
        "neuron": {"type": "srif", "vth": 0.5, "mpr": True, "imp": True},
        "bn": "tdbn",
        "readout": "mean",
    }


def _export_shipped(tmp_path_factory, checkpoint: str) -> tuple[Path, dict]:
    """`snnc export models/CHECKPOINT -o DIR --json` (the real CLI, in this process): (DIR, summary)."""
    from snnc.cli import main

    out = tmp_path_factory.mktemp("shipped") / Path(checkpoint).stem
    result = CliRunner().invoke(main, ["export", str(MODELS / checkpoint), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory`, by relative path."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def _shared(tmp_path_factory, checkpoint: str):
    """The export, then (after the session) proof that no test changed it."""
    out, summary = _export_shipped(tmp_path_factory, checkpoint)
    before = _snapshot(out)
    yield out, summary
    assert _snapshot(out) == before, f"a test changed the shared export of {checkpoint}: copy it first"


@pytest.fixture(scope="session")
def srif_export_and_summary(tmp_path_factory) -> tuple[Path, dict]:
    """The export of models/mnist_srif.pt for loihi2 and the summary `snnc export --json` printed."""
    yield from _shared(tmp_path_factory, "mnist_srif.pt")


@pytest.fixture(scope="session")
def srif_export(srif_export_and_summary) -> Path:
    """The export directory of models/mnist_srif.pt (loihi2). Read-only: copy it to change it."""
    return srif_export_and_summary[0]


@pytest.fixture(scope="session")
def lif_export_and_summary(tmp_path_factory) -> tuple[Path, dict]:
    """The export of models/mnist_lif.pt for loihi2 and the summary `snnc export --json` printed."""
    yield from _shared(tmp_path_factory, "mnist_lif.pt")


@pytest.fixture(scope="session")
def lif_export(lif_export_and_summary) -> Path:
    """The export directory of models/mnist_lif.pt (loihi2). Read-only: copy it to change it."""
    return lif_export_and_summary[0]
