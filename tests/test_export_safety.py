"""The export directory's guarantees under hostile use: --force never deletes what is not an snnc
export, verify runs the files that ship, the manifest guards every read, the energy gate cannot be
bypassed, a full disk is one line. Each case asserts the exit code, the one-line message and that
nothing outside the requested output changed (docs/errors.md)."""
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import netfactory
from clicheck import assert_clean_failure, invoke
from snnc import compiler, export_dir
from snnc.errors import OutputError
from snnc.train import save_checkpoint

CHECK, USAGE, INPUT, TARGET, OUTPUT, INTERRUPTED = 1, 2, 3, 4, 6, 130  # docs/errors.md
SNNC = [sys.executable, "-m", "snnc.cli"]
LOIHI2 = Path(__file__).resolve().parent.parent / "targets" / "loihi2.yaml"
TINY = {"name": "tiny-digits", "arch": "mnist_convnet", "arch_params": {"channels": [4, 8], "hidden": 16},
        "input_shape": [1, 8, 8], "num_classes": 10, "T": 2,
        "neuron": {"type": "srif", "vth": 0.5, "mpr": True, "imp": True}, "bn": "tdbn", "readout": "mean"}


def snapshot(root: Path) -> dict:
    """Every entry below `root` with its bytes (files) or its link target (symlinks)."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            entries[key] = ("link", os.readlink(path))
        elif path.is_file():
            entries[key] = ("file", path.read_bytes())
        else:
            entries[key] = ("dir",)
    return entries


def rehash(directory: Path, *names: str) -> None:
    """Update the manifest's SHA-256 of edited files, as an attacker would."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for name in names:
        manifest["files"][name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))


def edit_manifest(directory: Path, change) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, netfactory.random_model(TINY, seed=3),
                    {"data": "digits", "loss": "tet-s", "epochs": 0, "seed": 3, "test_accuracy": 0.0})
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    compiler.export(checkpoint, out)
    return out


@pytest.fixture
def copy(exported, tmp_path):
    """A private copy of the export to damage."""
    target = tmp_path / "copy"
    shutil.copytree(exported, target)
    return target


# --- 1. --force replaces only an snnc export -----------------------------------------------------

@pytest.mark.parametrize("name", [".", "..", ""])
def test_force_refuses_the_current_and_parent_directory(checkpoint, tmp_path, monkeypatch, name):
    work = tmp_path / "parent" / "work"
    work.mkdir(parents=True)
    (work / "thesis.tex").write_text("years of work")
    (work.parent / "notes.txt").write_text("more work")
    before = snapshot(tmp_path)
    monkeypatch.chdir(work)
    result = invoke("export", checkpoint, "-o", name, "--force")
    assert_clean_failure(result, OUTPUT)
    assert snapshot(tmp_path) == before


def test_force_refuses_a_directory_that_is_not_an_export(checkpoint, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "results.csv").write_text("1,2,3")
    before = snapshot(tmp_path)
    assert_clean_failure(invoke("export", checkpoint, "-o", data, "--force"), OUTPUT, "not an snnc export")
    assert snapshot(tmp_path) == before


def test_force_refuses_an_export_holding_user_files(checkpoint, copy):
    (copy / "my-notes.txt").write_text("keep me")
    before = snapshot(copy.parent)
    assert_clean_failure(invoke("export", checkpoint, "-o", copy, "--force"), OUTPUT, "my-notes.txt")
    assert snapshot(copy.parent) == before


def test_force_refuses_files_and_symlinks(checkpoint, exported, tmp_path):
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "link").symlink_to(exported, target_is_directory=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    outside = snapshot(exported)
    before = snapshot(tmp_path)
    assert_clean_failure(invoke("export", checkpoint, "-o", tmp_path / "file.txt", "--force"), OUTPUT,
                         "not a directory")
    assert_clean_failure(invoke("export", checkpoint, "-o", tmp_path / "link", "--force"), OUTPUT,
                         "symbolic link")
    assert_clean_failure(invoke("export", checkpoint, "-o", tmp_path / "dangling"), OUTPUT, "already exists")
    assert_clean_failure(invoke("export", checkpoint, "-o", tmp_path / "dangling", "--force"), OUTPUT,
                         "symbolic link")
    assert snapshot(tmp_path) == before and snapshot(exported) == outside


def test_an_overlong_name_is_one_line(checkpoint, tmp_path):
    assert_clean_failure(invoke("export", checkpoint, "-o", tmp_path / ("x" * 300)), OUTPUT, "longer")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_force_replaces_an_export(checkpoint, copy):
    (copy / "fidelity.json").unlink()  # damaged, but still only snnc's files
    edit_manifest(copy, lambda m: m["files"].pop("fidelity.json"))
    result = invoke("export", checkpoint, "-o", copy, "--force")
    assert result.exit_code == 0, result.output
    assert (copy / "fidelity.json").is_file()
    assert export_dir.ExportDir.open(copy).network.name == "tiny-digits"
    assert [p.name for p in copy.parent.iterdir() if p.name.startswith(".")] == []


def test_a_directory_that_appears_during_an_export_is_left_alone(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def someone_else_writes(compiled, directory, options):
        out.mkdir()
        (out / "theirs.txt").write_text("not snnc's")
        return []

    monkeypatch.setitem(export_dir._WRITERS, "intruder",
                        export_dir.ArtifactWriter("intruder", 0, someone_else_writes))
    with pytest.raises(OutputError, match="appeared"):
        compiler.export(checkpoint, out)
    assert snapshot(tmp_path) == {"out": ("dir",), "out/theirs.txt": ("file", b"not snnc's")}


def test_train_force_overwrites_only_a_checkpoint(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    (tmp_path / "report.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    before = snapshot(tmp_path)
    common = ["train", recipe, "--data", "digits", "--loss", "tet-s", "--epochs", 1, "--force"]
    assert_clean_failure(invoke(*common, "-o", tmp_path / "report.txt"), OUTPUT, "not an snnc checkpoint")
    assert_clean_failure(invoke(*common, "-o", tmp_path / "folder"), OUTPUT, "not a regular file")
    assert_clean_failure(invoke(*common, "-o", tmp_path / "missing" / "x.pt"), OUTPUT, "does not exist")
    assert snapshot(tmp_path) == before


# --- 2. verify runs the files that ship -----------------------------------------------------------

@pytest.mark.slow
def test_verify_runs_the_shipped_onnx_model(copy, checkpoint, tmp_path):
    other = tmp_path / "other"
    save_checkpoint(tmp_path / "other.pt", netfactory.random_model(TINY, seed=11),
                    {"data": "digits", "loss": "tet-s", "epochs": 0, "seed": 11, "test_accuracy": 0.0})
    compiler.export(tmp_path / "other.pt", other)
    shutil.copy(other / "model.onnx", copy / "model.onnx")  # a valid model of another network
    rehash(copy, "model.onnx")
    result = invoke("verify", copy, "--backends", "onnx", "--samples", 50, "--save-input", tmp_path / "d.npz")
    assert result.exit_code == CHECK, result.output
    assert "readout" in result.stderr and "onnx=" in result.stderr
    (copy / "model_step.onnx").write_bytes(b"garbage")
    rehash(copy, "model_step.onnx")
    assert_clean_failure(invoke("verify", copy, "--backends", "onnx-step", "--samples", 5), INPUT,
                         "ONNX model")


@pytest.mark.slow
def test_verify_runs_the_shipped_lava_graph(copy, tmp_path):
    graph = json.loads((copy / "lava/graph.json").read_text())
    with np.load(copy / "lava/network.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    neuron = next(p for p in graph["processes"] if p["type"] == "neuron" and p["name"] == "conv1")
    arrays[neuron["threshold"]] = np.zeros_like(arrays[neuron["threshold"]])
    (copy / "lava/network.npz").write_bytes(export_dir_npz(arrays))
    rehash(copy, "lava/network.npz")
    result = invoke("verify", copy, "--backends", "lava", "--samples", 3, "--save-input", tmp_path / "d.npz")
    assert result.exit_code == CHECK, result.output
    assert "layer 'conv1'" in result.stderr
    graph["connections"][0]["to"][1] = "no_such_port"
    (copy / "lava/graph.json").write_text(json.dumps(graph))
    rehash(copy, "lava/graph.json")
    assert_clean_failure(invoke("verify", copy, "--backends", "lava", "--samples", 3), INPUT, "no_such_port")


def export_dir_npz(arrays):
    from snnc.ir import deterministic_npz

    return deterministic_npz(arrays)


def test_the_mapping_that_ships_is_the_one_used(copy):
    mapping = json.loads((copy / "mapping.json").read_text())
    mapping["totals"]["cores_used"] = 9999
    (copy / "mapping.json").write_text(json.dumps(mapping))
    rehash(copy, "mapping.json")
    result = invoke("simulate", copy, "--samples", 2, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cores_used"] == 9999
    mapping["layers"] = [{"name": "conv1"}]
    (copy / "mapping.json").write_text(json.dumps(mapping))
    rehash(copy, "mapping.json")
    assert_clean_failure(invoke("simulate", copy, "--samples", 2), INPUT, "mapping")


# --- 3. the manifest guards every read -------------------------------------------------------------

def test_a_file_dropped_from_the_manifest_is_not_read(copy):
    edit_manifest(copy, lambda m: m["files"].pop("network.json"))
    assert_clean_failure(invoke("run", copy, "--samples", 2), INPUT, "network.json")
    for name in ("mapping.json", "model_spikes.onnx"):
        restored = json.loads((copy / "manifest.json").read_text())
        restored["files"]["network.json"] = hashlib.sha256((copy / "network.json").read_bytes()).hexdigest()
        restored["files"].pop(name)
        (copy / "manifest.json").write_text(json.dumps(restored))
        backend = "cycle" if name == "mapping.json" else "onnx"
        assert_clean_failure(invoke("verify", copy, "--backends", backend, "--samples", 2), INPUT, name)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.txt", "./network.json", "float/../network.json",
                                  "link.txt", "/proc/self/mem"])
def test_manifest_paths_stay_inside_the_export(copy, name):
    (copy.parent / "outside.txt").write_text("not part of the export")
    (copy / "link.txt").symlink_to(copy.parent / "outside.txt")
    edit_manifest(copy, lambda m: m["files"].__setitem__(name, "0" * 64))
    assert_clean_failure(invoke("inspect", copy), INPUT)


@pytest.mark.parametrize("files", [["network.json"], "network.json", None, {"network.json": 5}])
def test_malformed_manifest_files(copy, files):
    edit_manifest(copy, lambda m: m.__setitem__("files", files))
    assert_clean_failure(invoke("inspect", copy), INPUT)


def test_hashes_are_read_in_chunks(tmp_path):
    big = tmp_path / "big.bin"
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(big, "wb") as handle:
        for index in range(5):
            handle.write(block[index:] + block[:index])
    assert export_dir.sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()


# --- 4. the energy gate cannot be bypassed; the export carries its target --------------------------

@pytest.mark.parametrize("option", [["--budget-uj", "nan"], ["--budget-uj", "-1"], ["--max-regression", "nan"],
                                    ["--max-regression", "inf"]])
def test_gate_limits_that_could_never_fail_are_refused(exported, option):
    assert_clean_failure(invoke("energy", exported, "--samples", 2, *option), INPUT, option[0])


@pytest.mark.parametrize("value", [0, float("nan"), -3.0, "12"])
def test_a_baseline_that_cannot_fail_is_refused(exported, tmp_path, value):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"totals": {"energy_chip_uj": value, "synaptic_ops_counted": 10.0}}))
    result = invoke("energy", exported, "--samples", 2, "--baseline", baseline, "--max-regression", 5)
    assert_clean_failure(result, INPUT, "energy_chip_uj")


def _target_yaml(tmp_path, name, scale=1.0, file="custom.yaml"):
    doc = yaml.safe_load(LOIHI2.read_text())
    doc["name"] = name
    doc["energy_pj"] = {k: (v * scale if isinstance(v, (int, float)) else v) for k, v in doc["energy_pj"].items()}
    path = tmp_path / file
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_the_export_is_priced_with_the_target_it_was_compiled_for(checkpoint, exported, tmp_path):
    out = tmp_path / "pricey"
    assert invoke("export", checkpoint, "-o", out, "--target", _target_yaml(tmp_path, "loihi2", 100.0)).exit_code == 0
    shipped = json.loads(invoke("energy", exported, "--samples", 10, "--format", "json").stdout)
    custom = json.loads(invoke("energy", out, "--samples", 10, "--format", "json").stdout)
    # same network, same counts; every per-operation figure is 100x, so the energy is 100x
    assert custom["totals"]["synaptic_ops_counted"] == shipped["totals"]["synaptic_ops_counted"]
    assert math.isclose(custom["totals"]["energy_chip_uj"], 100 * shipped["totals"]["energy_chip_uj"], rel_tol=1e-9)


@pytest.mark.slow
def test_a_target_of_another_name_is_read_back(checkpoint, tmp_path):
    out = tmp_path / "mine"
    assert invoke("export", checkpoint, "-o", out, "--target", _target_yaml(tmp_path, "my-chip")).exit_code == 0
    (tmp_path / "custom.yaml").unlink()  # the export carries its own copy
    for args in (["inspect", out], ["simulate", out, "--samples", 2],
                 ["verify", out, "--backends", "cycle", "--samples", 2], ["energy", out, "--samples", 2]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
    assert "my-chip" in invoke("inspect", out).output


def test_target_names_do_not_escape_the_targets_folder(checkpoint, tmp_path):
    assert_clean_failure(invoke("export", checkpoint, "-o", tmp_path / "out", "--target", "../targets/loihi2"),
                         TARGET, "unknown target")
    assert not (tmp_path / "out").exists()


def test_nan_in_a_target_energy_table_is_refused(checkpoint, tmp_path):
    path = _target_yaml(tmp_path, "nan-chip")
    path.write_text(path.read_text().replace("synaptic_op: ", "synaptic_op: .nan #", 1))
    assert_clean_failure(invoke("export", checkpoint, "-o", tmp_path / "out", "--target", path), TARGET,
                         "synaptic_op")


# --- 6. a full disk ---------------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB file system (tmpfs; needs root, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing(checkpoint, full_disk, tmp_path):
    assert_clean_failure(invoke("export", checkpoint, "-o", full_disk / "out"), OUTPUT, "no space left")
    assert list(full_disk.iterdir()) == []
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(dict(TINY, arch_params={"channels": [32, 64], "hidden": 64})))
    result = invoke("train", recipe, "--data", "digits", "--loss", "tet-s", "--epochs", 1,
                    "-o", full_disk / "big.pt")
    errors = [line for line in result.stderr.splitlines() if not line.startswith("epoch ")]
    assert result.exit_code == OUTPUT and "Traceback" not in result.output
    assert len(errors) == 1 and errors[0].startswith("error: ") and "no space left" in errors[0]
    assert list(full_disk.iterdir()) == []


# --- 7/8. commands fail before work, with one line and the right code --------------------------------

def test_plot_to_a_bad_path_fails_before_the_run(exported, tmp_path):
    assert_clean_failure(invoke("energy", exported, "--plot", tmp_path / "no" / "plot.png"), OUTPUT, "does not exist")
    assert_clean_failure(invoke("energy", exported, "--plot", tmp_path / "plot.jpg"), OUTPUT, "PNG")
    assert list(tmp_path.iterdir()) == []
    result = invoke("energy", exported, "--samples", 2, "--plot", tmp_path / "plot.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_input_files(exported, tmp_path):
    np.save(tmp_path / "inputs.npy", np.zeros((2, 1, 1, 8, 8), np.int64))
    assert_clean_failure(invoke("verify", exported, "--input", tmp_path / "inputs.npy"), INPUT, "verify input")
    assert_clean_failure(invoke("verify", exported, "--save-input", tmp_path / "missing" / "d.npz"), OUTPUT,
                         "does not exist")
    assert_clean_failure(invoke("verify", exported, "--backends", ""), USAGE, "--backends")
    assert_clean_failure(invoke("verify", exported, "--backends", "reference"), USAGE, "--backends")


def test_save_input_never_overwrites_a_foreign_file(exported, tmp_path):
    (tmp_path / "results.npz").write_bytes(b"someone's data")
    before = snapshot(tmp_path)
    assert_clean_failure(invoke("verify", exported, "--save-input", tmp_path / "results.npz"), OUTPUT,
                         "not an snnc verify input")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_energy_of_nir_and_netx_exports(exported, tmp_path):
    nir_out, netx_out = tmp_path / "nir", tmp_path / "netx"
    assert invoke("export", exported / "network.nir", "-o", nir_out, "--data", "digits", "--T", 2).exit_code == 0
    assert invoke("export", netfactory.netx_file(tmp_path / "n.net"), "-o", netx_out).exit_code == 0
    for out in (nir_out, netx_out):
        result = invoke("energy", out, "--samples", 5, "--format", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["totals"]["synaptic_ops_counted"] > 0


def test_module_entry_point_runs_every_command():
    result = subprocess.run(SNNC + ["verify", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--backends" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", ["verify", "run"])
def test_sigterm_exits_130(exported, command, tmp_path):
    # backends without child processes: Lava's runtime tears its processes down with signals of
    # its own, which makes the exit status of an interrupted Lava run depend on timing
    args = {"verify": ["verify", str(exported), "--backends", "onnx-step", "--data", "random:100000",
                       "--save-input", str(tmp_path / "d.npz")],
            "run": ["run", str(exported), "--backend", "cycle", "--data", "random:100000"]}[command]
    # compile numba's kernels first (a fresh clone has no cache): LLVM installs signal handlers of
    # its own while it compiles, and a SIGTERM then kills the process without snnc's cleanup
    warm = [arg.replace("random:100000", "random:2") for arg in args]
    assert subprocess.run(SNNC + warm, capture_output=True).returncode == 0
    process = subprocess.Popen(SNNC + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    assert process.poll() is None, "finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == INTERRUPTED and "error: interrupted" in stderr
