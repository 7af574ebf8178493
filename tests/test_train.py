"""Data sets, losses, checkpoints and the `snnc train` / `snnc eval` commands."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from snnc.cli import main
from snnc.data import encode, load_dataset
from snnc.errors import InputError
from snnc.models import build
from snnc.train import load_checkpoint, save_checkpoint, sequence_loss

MODELS = Path(__file__).resolve().parent.parent / "models"
SHIPPED = ["mnist_srif.pt", "mnist_lif.pt"]


# ---------------------------------------------------------------- data


def test_mnist5k_split_is_fixed_and_real():
    data = load_dataset("mnist5k")
    assert data.train_images.shape == (4000, 1, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (1000, 1, 28, 28) and data.test_labels.dtype == np.int64
    # Class counts of the rng(0) split documented in models/README.md: a changed split fails here.
    assert np.bincount(data.test_labels).tolist() == [104, 113, 97, 86, 102, 109, 108, 105, 92, 84]
    assert data.train_images.max() == 255 and data.train_images.mean() > 20  # real ink, not zeros
    assert load_dataset("mnist5k") is data  # parsed once


def test_digits_split():
    data = load_dataset("digits")
    assert data.train_images.shape == (1437, 1, 8, 8) and data.test_images.shape == (360, 1, 8, 8)
    assert data.train_images.dtype == np.uint8 and data.train_images.max() == 255


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(InputError, match="known: mnist5k, digits"):
        load_dataset("cifar10")


def test_encode_is_direct_repetition():
    images = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)  # [1, 1, 2, 2]
    x = encode(images, 3)
    assert x.shape == (3, 1, 1, 2, 2) and x.dtype == torch.float32
    assert torch.equal(x[0], x[2])
    assert x[1, 0, 0].flatten().tolist() == pytest.approx([0.0, 1.0, 0.2, 0.4])


# ---------------------------------------------------------------- losses


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    y = torch.randn(4, 3, 5)
    labels = torch.tensor([0, 3, 4])
    per_step = [F.cross_entropy(y[t], labels) for t in range(4)]
    smoothed = [F.cross_entropy(y[t], labels, label_smoothing=0.1) for t in range(4)]
    assert sequence_loss("sdt", y, labels) == pytest.approx(F.cross_entropy(y.mean(0), labels).item())
    assert sequence_loss("lts", y, labels) == pytest.approx(F.cross_entropy(y[-1], labels).item())
    assert sequence_loss("tet", y, labels) == pytest.approx(torch.stack(per_step).mean().item())
    assert sequence_loss("tet-s", y, labels) == pytest.approx(torch.stack(smoothed).mean().item())
    mse = torch.stack([F.mse_loss(y[t], torch.ones_like(y[t])) for t in range(4)]).mean()
    assert sequence_loss("tet", y, labels, tet_lambda=0.5).item() == pytest.approx(
        (torch.stack(per_step).mean() + 0.5 * mse).item())
    with pytest.raises(InputError, match="unknown loss"):
        sequence_loss("hinge", y, labels)


# ---------------------------------------------------------------- checkpoints


@pytest.fixture
def checkpoint(tmp_path, tiny_recipe):
    torch.manual_seed(0)
    model = build(tiny_recipe)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, {"data": "digits", "loss": "tet-s", "epochs": 0, "seed": 0,
                                  "test_accuracy": 0.0})
    return path


def test_checkpoint_round_trip_is_weights_only(checkpoint):
    raw = torch.load(checkpoint, weights_only=True)
    assert raw["format"] == "snnc-checkpoint" and raw["format_version"] == 1
    model, loaded = load_checkpoint(checkpoint)
    assert not model.training
    for key, tensor in raw["state_dict"].items():
        assert torch.equal(model.state_dict()[key], tensor)
    assert loaded["training"]["snnc_version"]


def rewrite(path, edit):
    checkpoint = torch.load(path, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("state_dict"), "missing key"),
    (lambda c: c.update(format="onnx"), "format is 'onnx'"),
    (lambda c: c.update(format_version=99), "format_version 99"),
    (lambda c: c["recipe"].update(T="four"), "field 'T'"),
    (lambda c: c["state_dict"].pop("nodes.0.synapse.weight"), "missing tensor nodes.0.synapse.weight"),
    (lambda c: c["state_dict"].update(extra=torch.zeros(1)), "unexpected tensor extra"),
    (lambda c: c["recipe"]["arch_params"].update(hidden=17), "nodes.5.synapse.weight has shape"),
    (lambda c: c["state_dict"]["nodes.0.neuron.imp"].fill_(float("nan")), "NaN or Inf"),
    (lambda c: c["state_dict"].update({"nodes.0.bn.weight": "text"}), "must map names to tensors"),
])
def test_inconsistent_checkpoint_is_an_input_error(checkpoint, edit, message):
    rewrite(checkpoint, edit)
    with pytest.raises(InputError, match=message):
        load_checkpoint(checkpoint)


class NotWeights:
    """A class instance: weights-only loading must refuse to unpickle it."""


@pytest.mark.parametrize("content", [
    b"",
    bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
    pickle.dumps([1, 2, 3]),  # a plain pickle, not a torch zip file
], ids=["empty", "random", "plain-pickle"])
def test_unreadable_checkpoint_is_an_input_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable torch file"):
        load_checkpoint(path)


def test_truncated_and_pickled_checkpoints_are_refused(tmp_path, checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:2000])
    with pytest.raises(InputError, match="not a readable torch file"):
        load_checkpoint(truncated)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "snnc-checkpoint", "payload": NotWeights()}, pickled)
    with pytest.raises(InputError, match="pickled Python objects"):
        load_checkpoint(pickled)


def test_missing_or_directory_checkpoint(tmp_path):
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(InputError, match="is a directory"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------- command line


@pytest.mark.slow   # trains
def test_train_then_eval_on_the_command_line(tmp_path, tiny_recipe):
    import yaml

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe))
    output = tmp_path / "tiny.pt"
    args = ["train", str(recipe), "--data", "digits", "--loss", "tet-s", "--epochs", "2",
            "--lr", "0.01", "--threads", "1", "-o", str(output)]
    runner = CliRunner()
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output
    trained = torch.load(output, weights_only=True)
    assert trained["training"]["loss"] == "tet-s" and trained["training"]["data"] == "digits"

    result = runner.invoke(main, ["eval", str(output), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == 360 and report["T"] == 2 and report["readout"] == "mean"
    assert report["accuracy"] == pytest.approx(trained["training"]["test_accuracy"])
    assert report["accuracy"] > 0.5  # two epochs learn; chance is 0.1

    again = runner.invoke(main, args)
    assert again.exit_code == 6 and "already exists" in again.output

    brief = tmp_path / "brief.pt"
    result = runner.invoke(main, args[:-1] + [str(brief), "--samples", "100", "--test-samples", "50"])
    assert result.exit_code == 0, result.output
    assert "trained on 100 samples" in result.output and "on 50 digits test samples" in result.output
    assert torch.load(brief, weights_only=True)["training"]["samples"] == 100


@pytest.mark.parametrize("args, message", [
    (["train", "missing.yaml", "--loss", "lts", "--epochs", "1", "-o", "x.pt"], "recipe not found"),
    (["eval", "missing.pt"], "checkpoint not found"),
])
def test_command_line_input_errors_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3
    assert result.output.strip() == result.output.strip().splitlines()[0]
    assert message in result.output


def test_eval_rejects_unknown_dataset(checkpoint):
    result = CliRunner().invoke(main, ["eval", str(checkpoint), "--data", "cifar10"])
    assert result.exit_code == 3 and "cifar10: no such data file" in result.output


# ---------------------------------------------------------------- shipped checkpoints


@pytest.mark.slow   # all 1000 test digits
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_is_small_and_accurate(name):
    path = MODELS / name
    assert path.stat().st_size < 5 * 1024 * 1024
    assert torch.load(path, weights_only=True)["format"] == "snnc-checkpoint"
    result = CliRunner().invoke(main, ["eval", str(path), "--data", "mnist5k", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == 1000 and report["T"] == 4
    assert report["accuracy"] >= 0.97
