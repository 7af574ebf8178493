"""Every --data kind through export, verify and energy (the real CLI), and bad data files refused
by every command with one line, exit 3 and nothing written (docs/data.md, docs/errors.md)."""
import json

import h5py
import numpy as np
import pytest

import netfactory
from clicheck import assert_clean_failure, invoke
from datafiles import BAD_FILES, EVENT_DTYPE, images
from snnc.train import save_checkpoint

# a network with an N-MNIST-shaped input (2 polarities, 34x34), direct encoding, 5 steps
TINY = {"arch_params": {"channels": [4, 8], "hidden": 16}}
DVS = dict(netfactory.recipe("mnist_lif", input_shape=[2, 34, 34], T=5, **TINY), name="dvs-tiny")
MNIST_TINY = dict(netfactory.recipe("mnist_lif", **TINY), name="mnist-tiny")
BACKENDS = "onnx,onnx-step,cycle"


def checkpoint(path, spec):
    save_checkpoint(path, netfactory.random_model(spec, seed=2), {"data": "mnist5k", "loss": "tet", "epochs": 0})
    return path


def event_streams(count, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for sample in range(count):
        events = np.zeros(300, EVENT_DTYPE)
        events["sample"], events["t"] = sample, np.sort(rng.integers(0, 300_000, 300))
        events["x"], events["y"], events["p"] = rng.integers(0, 34, 300), rng.integers(0, 34, 300), rng.integers(0, 2, 300)
        rows.append(events)
    return np.concatenate(rows)


def write_data(kind, directory):
    """A data file (or a random spec) of each kind for the DVS network; labels 0..9."""
    labels = np.arange(12) % 10
    if kind == "frames.npz":
        np.savez(directory / kind, inputs=images(12, (2, 34, 34)), labels=labels)
    elif kind == "steps.h5":
        with h5py.File(directory / kind, "w") as handle:
            handle["inputs"] = (np.random.default_rng(1).random((12, 5, 2 * 34 * 34)) < 0.2).astype(np.uint8)
            handle["labels"] = labels
    elif kind == "events.npz":
        np.savez(directory / kind, events=event_streams(12), sensor_size=np.array([34, 34, 2]), labels=labels)
    else:
        return kind
    return str(directory / kind)


@pytest.mark.parametrize("kind", [
    "random:12:3",
    pytest.param("frames.npz", marks=pytest.mark.slow),
    pytest.param("steps.h5", marks=pytest.mark.slow),
    pytest.param("events.npz", marks=pytest.mark.slow)])
def test_every_data_kind_goes_through_export_verify_and_energy(tmp_path, kind):
    source = checkpoint(tmp_path / "dvs.pt", DVS)
    data = write_data(kind, tmp_path)
    out = tmp_path / "out"
    result = invoke("export", source, "-o", out, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert fidelity["data"] == data and fidelity["samples"] == 12
    assert (fidelity["quantized_accuracy"] is None) == kind.startswith("random")
    assert json.loads((out / "manifest.json").read_text())["data"] == data
    verified = invoke("verify", out, "--backends", BACKENDS, "--json")   # the export's data by default
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["equivalent"] and report["samples"] == 12 and report["inputs"] == data
    energy = invoke("energy", out, "--format", "json")
    assert energy.exit_code == 0, energy.output
    totals = json.loads(energy.stdout)
    assert totals["samples"] == 12 and totals["data"] == data
    assert any(row["synaptic_ops_counted"] > 0 for row in totals["layers"])


def test_export_without_data_measures_no_fidelity_and_later_commands_ask_for_data(tmp_path):
    source = checkpoint(tmp_path / "dvs.pt", DVS)
    out = tmp_path / "out"
    result = invoke("export", source, "-o", out, "--data", "none")
    assert result.exit_code == 0, result.output
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert fidelity["measured"] is False
    assert json.loads((out / "manifest.json").read_text())["data"] is None
    assert_clean_failure(invoke("verify", out, "--backends", "onnx"), 3, "--data")
    assert_clean_failure(invoke("energy", out), 3, "--data")
    verified = invoke("verify", out, "--backends", "onnx", "--data", "random:4", "--json")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["equivalent"], verified.output


@pytest.mark.slow
def test_spike_encoded_netx_network_on_event_streams_in_lava(tmp_path):
    """lava-dl's netx MNIST layout (784 input spikes) fed 28x28 one-polarity event streams: the
    frames [1, 28, 28] reach the flat input by the layout rule, clipped to one spike per step."""
    source = netfactory.netx_file(tmp_path / "net.net")
    events = event_streams(6)
    events["x"] %= 28
    events["y"] %= 28
    np.savez(tmp_path / "ev.npz", events=events, sensor_size=np.array([28, 28, 1]), labels=np.arange(6))
    out = tmp_path / "out"
    assert invoke("export", source, "-o", out, "--data", tmp_path / "ev.npz").exit_code == 0
    verified = invoke("verify", out, "--backends", "onnx,lava,cycle", "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["equivalent"]


def bad_file_cases():
    return [pytest.param(case, marks=() if case in ("shape", "pickle", "event outside") else pytest.mark.slow)
            for case in sorted(BAD_FILES)]


@pytest.mark.parametrize("case", bad_file_cases())
def test_export_refuses_a_bad_data_file_before_writing_anything(tmp_path, case):
    make, message = BAD_FILES[case]
    events = "event" in case or case == "no sensor size"
    source = checkpoint(tmp_path / "net.pt", DVS if events else MNIST_TINY)
    path = make(tmp_path / "bad.npz")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_clean_failure(invoke("export", source, "-o", tmp_path / "out", "--data", path), 3, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    source = checkpoint(directory / "net.pt", MNIST_TINY)
    result = invoke("export", source, "-o", directory / "out", "--data", "random:4")
    assert result.exit_code == 0, result.output
    return directory / "out"


@pytest.mark.parametrize("command", ["verify", "energy", "simulate", "run"])
@pytest.mark.parametrize("case", ["shape", "negative", "pickle", "labels length"])
def test_commands_on_an_export_refuse_bad_data_files(tmp_path, tiny_export, command, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path / "bad.npz")
    args = [command, tiny_export, "--data", path] + (["--backends", "onnx"] if command == "verify" else [])
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_clean_failure(invoke(*args), 3, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
