"""Hostile inputs (issue 13): tiny files that ask for huge sizes, malformed fields, wrong types.

Each is refused through the real CLI with one `error:` line naming the problem and the documented
exit code (3 bad input, 4 target error), before anything of the asked-for size is allocated, and
without writing anything.
"""
import hashlib
import io
import json
import os
import resource
import shutil
import zipfile

import h5py
import netfactory
from clicheck import assert_clean_failure, invoke
import nir
import numpy as np
import pytest
import torch
import yaml

from snnc.targets import TARGETS_DIR
from snnc.train import save_checkpoint

INPUT, TARGET = 3, 4  # docs/errors.md
LIMIT_T, LIMIT_LAYER = "100000", "16777216"  # docs/errors.md, "Limits"
TINY = dict(netfactory.recipe("mnist_lif", input_shape=[1, 8, 8], arch_params={"channels": [4, 8], "hidden": 16},
                              T=2), name="tiny-digits-lif")


def snapshot(directory):
    """Every file under `directory` with its SHA-256: what a refused command must leave alone."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def refused(directory, code, *fragments, args, out=None):
    """Run the CLI; assert one `error:` line containing `fragments`, `code`, and no change."""
    before = snapshot(directory)
    result = invoke(*args)
    assert_clean_failure(result, code, *fragments)
    assert snapshot(directory) == before
    if out is not None:
        assert not out.exists()
    return result.stderr.strip()


# --- checkpoints -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    save_checkpoint(path, netfactory.random_model(TINY, seed=5),
                    {"data": "digits", "loss": "lts", "epochs": 0, "seed": 5, "test_accuracy": 0.0})
    return path


def _altered(tmp_path, checkpoint, change):
    contents = torch.load(checkpoint, weights_only=True)
    change(contents)
    path = tmp_path / "altered.pt"
    torch.save(contents, path)
    return path


def _negative_variance(contents):
    key = next(k for k in contents["state_dict"] if k.endswith("running_var"))
    contents["state_dict"][key][0] = -0.5


@pytest.mark.parametrize("change, fragments", [
    (lambda c: c["recipe"].update(T=10 ** 9), ["'T'", "1000000000", LIMIT_T]),
    (lambda c: c["recipe"].update(input_shape=[1, 100000, 100000]), ["input_shape", LIMIT_LAYER]),
    (lambda c: c["recipe"]["arch_params"].update(channels=[10 ** 6, 8]), ["conv1", LIMIT_LAYER]),
    (lambda c: c["recipe"]["arch_params"].update(channels=[4000, 8]), ["has shape [4, 1, 3, 3]", "[4000, 1, 3, 3]"]),
    (lambda c: c.update(training=["digits"]), ["'training' must be a mapping"]),
    (lambda c: c["training"].update(data={"name": "digits"}), ["'training.data'"]),
    (_negative_variance, ["running_var", "negative variance"]),
])
def test_checkpoint_refused(tmp_path, checkpoint, change, fragments):
    path = _altered(tmp_path, checkpoint, change)
    out = tmp_path / "out"
    refused(tmp_path, INPUT, *fragments, args=["export", path, "-o", out], out=out)


def test_recipe_sizes_checked_against_the_tensors_before_building(tmp_path, checkpoint):
    """5000 x 5000 channels is within the limits but would take about 1 GB of weights; the checkpoint
    holds 4 x 8, and that is found before the model is built."""
    path = _altered(tmp_path, checkpoint, lambda c: c["recipe"]["arch_params"].update(channels=[5000, 5000]))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    refused(tmp_path, INPUT, "has shape", args=["eval", path])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 300, f"peak memory grew by {grown_mib:.0f} MiB"


class SystemCall:
    """Unpickling this would run a shell command (os.system, a module torch blocks outright)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_object_checkpoint_gets_the_documented_message(tmp_path, checkpoint):
    marker = tmp_path / "pwned"
    contents = torch.load(checkpoint, weights_only=True)
    contents["training"]["note"] = SystemCall(marker)
    path = tmp_path / "hostile.pt"
    torch.save(contents, path)
    line = refused(tmp_path, INPUT, "holds pickled Python objects", "system", "weights-only checkpoints",
                   args=["export", path, "-o", tmp_path / "out"], out=tmp_path / "out")
    assert "weights_only=False" not in line
    assert not marker.exists(), "the checkpoint ran code"


# --- NIR graphs --------------------------------------------------------------------------------------

def _nir_graph(input_shape=(1, 8, 8), padding=1, conv=True, pool=None):
    """input -> conv 2x3x3 (padding) -> LIF, or a sum pool of kernel `pool` (so that the file stays
    small whatever size it claims) -> flatten -> affine 10 -> LI -> output."""
    rng = np.random.default_rng(0)
    c, h, w = input_shape
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    chain = ["input"]
    if conv:
        nodes["conv"] = nir.Conv2d(input_shape=(h, w), weight=rng.normal(size=(2, c, 3, 3)), stride=1,
                                   padding=padding, dilation=1, groups=1, bias=np.zeros(2))
        chain.append("conv")
        c, h, w = 2, h + 2 * padding - 2, w + 2 * padding - 2
    if pool is None:
        nodes["lif"] = nir.LIF(**{k: np.full((c, h, w), v) for k, v in
                                  (("tau", 2e-3), ("r", 2.0), ("v_leak", 0.0), ("v_threshold", 1.0))})
        chain.append("lif")
    else:
        nodes["pool"] = nir.SumPool2d(kernel_size=np.array([pool, pool]), stride=np.array([pool, pool]),
                                      padding=np.array([0, 0]))
        chain.append("pool")
        h, w = h // pool, w // pool
    nodes.update({
        "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([c, h, w])}),
        "fc": nir.Affine(weight=rng.normal(size=(10, c * h * w)), bias=np.zeros(10)),
        "li": nir.LI(tau=np.full(10, 2e-3), r=np.full(10, 2.0), v_leak=np.zeros(10)),
        "output": nir.Output(output_type={"output": np.array([10])})})
    chain += ["flat", "fc", "li", "output"]
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain, chain[1:])), metadata={"dt": 1e-3})


@pytest.fixture(scope="module")
def nir_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("nir") / "tiny.nir"
    nir.write(str(path), _nir_graph())
    return path


def _put(group, key, value):
    if key in group:
        del group[key]
    group[key] = value


def _edited_nir(tmp_path, nir_file, edit):
    path = tmp_path / "edited.nir"
    shutil.copy(nir_file, path)
    with h5py.File(path, "r+") as handle:
        edit(handle["node"])
    return path


def test_tiny_nir_graph_exports(tmp_path, nir_file):
    """The unedited graph is accepted: the refusals below come from the edits."""
    result = invoke("export", nir_file, "-o", tmp_path / "out", "--T", 2, "--data", "digits")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("edit, fragments", [
    (lambda f: _put(f["nodes"]["conv"], "stride", np.array([0, 0])), ["'conv'", "stride [0, 0]"]),
    (lambda f: _put(f["nodes"]["fc"], "weight", "abc"), ["'fc'", "'weight' holds text"]),
    (lambda f: _put(f["nodes"]["lif"], "tau", "abc"), ["'lif'", "'tau' holds text"]),
    (lambda f: _put(f["metadata"], "dt", "fast"), ["'dt'", "positive number"]),
    (lambda f: _put(f["metadata"], "dt", np.array([1e-3, 2e-3])), ["'dt'", "one positive number"]),
    (lambda f: _put(f["metadata"], "snnc_network", "[1, 2]"), ["snnc_network", "must be an object"]),
    (lambda f: _put(f["metadata"], "snnc_network", '{"T": 2, "encoding": 5}'), ["snnc_network"]),
])
def test_malformed_nir_refused(tmp_path, nir_file, edit, fragments):
    path = _edited_nir(tmp_path, nir_file, edit)
    out = tmp_path / "out"
    refused(tmp_path, INPUT, *fragments, args=["export", path, "-o", out, "--T", 2, "--data", "digits"], out=out)


@pytest.mark.parametrize("graph, fragments", [
    (lambda: _nir_graph(input_shape=(1, 100000, 100000), conv=False, pool=100000),
     ["'input'", "10000000000", LIMIT_LAYER]),
    (lambda: _nir_graph(padding=100000, pool=200006), ["'conv'", "[2, 200006, 200006]", LIMIT_LAYER]),
])
def test_nir_sizes_beyond_the_limits_refused(tmp_path, graph, fragments):
    path = tmp_path / "big.nir"
    nir.write(str(path), graph())
    out = tmp_path / "out"
    refused(tmp_path, INPUT, *fragments, args=["export", path, "-o", out, "--T", 2, "--data", "digits"], out=out)


@pytest.mark.parametrize("option, fragments", [
    (["--T", 10 ** 9], ["T = 1000000000", LIMIT_T]),
    (["--input-scale", "nan"], ["input scale", "nan"]),
    (["--input-scale", "0"], ["input scale", "0.0"]),
    (["--input-scale", "-1"], ["input scale", "-1.0"]),
])
def test_nir_options_out_of_range_refused(tmp_path, nir_file, option, fragments):
    out = tmp_path / "out"
    args = ["export", nir_file, "-o", out, "--data", "digits"] + (["--T", 2] if option[0] != "--T" else []) + option
    refused(tmp_path, INPUT, *fragments, args=args, out=out)


# --- lava-dl netx files --------------------------------------------------------------------------------

def _netx_layer(layers, index, kind, shape):
    group = layers.create_group(str(index))
    group.create_dataset("type", (1,), "S10", [kind.encode("ascii")])
    if shape is not None:
        group.create_dataset("shape", data=np.array(shape))
    return group


def _netx_neuron(group, vth):
    neuron = group.create_group("neuron")
    for key, value in (("type", "CUBA"), ("iDecay", 4096), ("vDecay", 0), ("vThMant", vth), ("refDelay", 1),
                       ("gradedSpike", False)):
        neuron.create_dataset(key, data=value)


def _netx_file(path, input_shape=(1, 8, 8), padding=1, stride=1, t_sample=2, edit=None):
    """input (1, 8, 8) -> conv 2x3x3 (stride, padding) -> flatten -> dense 10; spiking layers."""
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as handle:
        layers = handle.create_group("layer")
        _netx_layer(layers, 0, "input", input_shape)
        conv = _netx_layer(layers, 1, "conv", None)
        conv.create_dataset("weight", data=(rng.integers(-50, 51, (2, 1, 3, 3)) * 2).astype(np.float32))
        conv.create_dataset("stride", data=np.array([stride, stride]))
        conv.create_dataset("padding", data=np.array([padding, padding]))
        _netx_neuron(conv, 200)
        _netx_layer(layers, 2, "flatten", [128])
        dense = _netx_layer(layers, 3, "dense", [10])
        dense.create_dataset("weight", data=(rng.integers(-50, 51, (10, 128)) * 2).astype(np.float32))
        _netx_neuron(dense, 300)
        handle.create_group("simulation").create_dataset("tSample", data=t_sample)
        if edit is not None:
            edit(handle)
    return path


def test_tiny_netx_file_exports(tmp_path):
    result = invoke("export", _netx_file(tmp_path / "tiny.net"), "-o", tmp_path / "out", "--data", "digits")
    assert result.exit_code == 0, result.output


def _encoding(text):
    def edit(handle):
        handle.create_group("snnc").attrs["encoding"] = text
    return edit


@pytest.mark.parametrize("options, fragments", [
    ({"t_sample": 10 ** 9}, ["T = 1000000000", LIMIT_T]),
    ({"padding": 100000}, ["[2, 200006, 200006]", LIMIT_LAYER]),
    ({"input_shape": (1, 100000, 100000)}, ["[1, 100000, 100000]", LIMIT_LAYER]),
    ({"stride": 0}, ["stride must be two integers >= 1"]),
    ({"edit": lambda h: h["layer/0"].__delitem__("shape")}, ["/layer/0", "'shape' is missing"]),
    ({"edit": lambda h: _put(h["layer/1"], "weight", "heavy")}, ["/layer/1", "'weight' holds text"]),
    ({"edit": lambda h: _put(h["layer/1"], "stride", "1")}, ["/layer/1", "'stride' holds text"]),
    ({"edit": lambda h: _put(h["layer/1/neuron"], "vThMant", "high")}, ["neuron", "'vThMant' holds text"]),
    ({"edit": lambda h: _put(h["simulation"], "tSample", "long")}, ["'tSample' holds text"]),
    ({"edit": _encoding("[1, 2]")}, ["encoding must be a mapping"]),
    ({"edit": _encoding('{"kind": "direct", "scale": "x", "max": 255}')}, ["input scale"]),
    ({"edit": _encoding(np.void(b"\xff\xfe{"))}, ["malformed snnc/encoding"]),
    ({"edit": lambda h: h.create_group("snnc").attrs.__setitem__("latency", 7)}, ["snnc/latency", "0 or 1", "7"]),
    ({"edit": lambda h: h.create_group("snnc").attrs.__setitem__("latency", "one")}, ["snnc/latency", "'one'"]),
])
def test_malformed_netx_refused(tmp_path, options, fragments):
    path = _netx_file(tmp_path / "bad.net", **options)
    out = tmp_path / "out"
    refused(tmp_path, INPUT, *fragments, args=["export", path, "-o", out, "--data", "digits"], out=out)


# --- target descriptions -----------------------------------------------------------------------------

def _target_variant(tmp_path, change):
    doc = yaml.safe_load((TARGETS_DIR / "loihi2.yaml").read_text())
    change(doc)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


ALIAS_BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] +
                       [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
                        f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)] +
                       ["description: *a8", "name: bomb"]) + "\n"


@pytest.mark.parametrize("write, fragments", [
    (lambda p: p.write_text(ALIAS_BOMB), ["anchors and aliases are not allowed"]),
    (lambda p: p.write_bytes(b"name: loihi\xff\xfe2\n"), ["not UTF-8"]),
    (lambda p: p.write_text("# padding\n" * 200000), ["at most 1048576 bytes"]),
])
def test_hostile_target_files_refused(tmp_path, write, fragments):
    path = tmp_path / "hostile.yaml"
    write(path)
    refused(tmp_path, TARGET, str(path), *fragments, args=["targets", "show", path])
    refused(tmp_path, TARGET, *fragments, args=["export", "unused.pt", "-o", tmp_path / "out", "--target", path],
            out=tmp_path / "out")


@pytest.mark.parametrize("field, value, bounds", [
    ("weight_bits", 17, "between 2 and 16"), ("activation_shift", 64, "between 0 and 16"),
    ("state_bits", 200, "between 8 and 32"), ("decay_bits", 0, "between 1 and 16"),
    ("bias_mant_bits", 64, "between 2 and 32"), ("bias_exp_bits", 64, "between 0 and 5"),
    ("threshold_mant_bits", 0, "between 1 and 32"), ("threshold_shift", 64, "between 0 and 16"),
    ("input_bits", 64, "between 1 and 16"), ("bias_exp_bits", "3", "must be an integer"),
])
def test_every_target_width_is_range_checked(tmp_path, field, value, bounds):
    path = _target_variant(tmp_path, lambda d: d["arithmetic"].update({field: value}))
    refused(tmp_path, TARGET, f"'arithmetic.{field}'", bounds, args=["targets", "show", path])


def test_shift_at_least_the_state_width_refused(tmp_path):
    path = _target_variant(tmp_path, lambda d: d["arithmetic"].update(state_bits=12, threshold_shift=12))
    refused(tmp_path, TARGET, "'arithmetic.threshold_shift'", "below state_bits", args=["targets", "show", path])


# --- re-hashed network.json in an export directory -----------------------------------------------------

@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("export") / "tiny"
    result = invoke("export", checkpoint, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def _rehash(directory, name):
    """Update the manifest's SHA-256 of `name`, so that the integrity check passes."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _rehashed(tmp_path, export_dir, change):
    """A copy of the export whose network.json was edited and its manifest hash updated."""
    copy = tmp_path / "edited"
    shutil.copytree(export_dir, copy)
    doc = json.loads((copy / "network.json").read_text())
    change(doc)
    (copy / "network.json").write_text(json.dumps(doc))
    _rehash(copy, "network.json")
    return copy


def _node(doc, name):
    return next(node for node in doc["nodes"] if node["name"] == name)


@pytest.mark.parametrize("change, fragments", [
    (lambda d: _node(d, "conv2")["attrs"].update(stride=[2, 2]), ["'conv2'", "shape [8, 4, 4]", "[8, 2, 2]"]),
    (lambda d: _node(d, "conv1")["attrs"].update(stride=[0, 0]), ["'conv1'", "stride"]),
    (lambda d: _node(d, "fc1").update(shape=[17]), ["'fc1'", "shape [17]"]),
    (lambda d: d.update(T=10 ** 9), ["T = 1000000000", LIMIT_T]),
    (lambda d: d["arithmetic"].update(state_bits=200), ["'arithmetic.state_bits'", "200"]),
    (lambda d: d["arithmetic"].update(bias_exp_bits=64), ["'arithmetic.bias_exp_bits'", "64"]),
    (lambda d: d["metadata"].pop("target"), ["does not name the target"]),
    (lambda d: d["encoding"].update(scale=-1), ["input scale"]),
    (lambda d: d.update(nodes="conv1"), ["malformed network.json"]),
])
@pytest.mark.parametrize("command", [["inspect"], ["run", "--samples", 4]])
def test_rehashed_network_json_refused(tmp_path, export_dir, change, fragments, command):
    edited = _rehashed(tmp_path, export_dir, change)
    refused(tmp_path, INPUT, *fragments, args=[command[0], edited] + command[1:])


def test_npz_member_claiming_a_huge_array_refused_before_inflating(tmp_path, export_dir):
    copy = tmp_path / "edited"
    shutil.copytree(export_dir, copy)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)})
    with zipfile.ZipFile(copy / "network.npz", "w") as archive:
        archive.writestr("conv1/weight.npy", header.getvalue() + bytes(64))
    _rehash(copy, "network.npz")
    refused(tmp_path, INPUT, "conv1/weight.npy", "[1099511627776]", "268435456", args=["inspect", copy])
