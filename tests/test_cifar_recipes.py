"""The shipped CIFAR-shaped recipes (models/resnet19.yaml, resnet20.yaml, vgg16.yaml,
sew_resnet18.yaml; input 3x32x32) export end to end on an .npz of 3x32x32 images, on a target where
they fit; on one Loihi 2 chip, where only ResNet-20 fits (with its convolution weights shared), the
design-rule error says so in one line before any fidelity is measured.

The checkpoints are untrained: the recipe's model with random weights, batch-norm statistics and
IMPs (netfactory.random_model), written by save_checkpoint as `snnc train` writes one. Training
would change the numbers in it, not the path through the compiler.
"""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import netfactory
from clicheck import assert_clean_failure, invoke
from snnc import compiler, passes
from snnc.train import save_checkpoint

INPUT, DESIGN_RULE = 3, 5
RECIPES = ["resnet20", "vgg16", "sew_resnet18", "resnet19"]
LOIHI2 = Path(__file__).resolve().parent.parent / "targets" / "loihi2.yaml"
SAMPLES = 4
# A ResNet-20 of the recipe's topology family, narrow and one block per stage: fast enough for the
# default test tier, with the same 3x32x32 input.
SMALL_RESNET = dict(netfactory.recipe("resnet20", arch_params={"channels": [4, 8, 8], "blocks": [1, 1, 1]}),
                    name="resnet-cifar-small")


def never(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran")

    return fail


def untrained_checkpoint(path, spec):
    save_checkpoint(path, netfactory.random_model(spec, seed=0), {"loss": "tet-s", "epochs": 0})
    return path


def cifar_file(path):
    """SAMPLES 3x32x32 uint8 images with labels, as docs/data.md says a data file holds them."""
    rng = np.random.default_rng(0)
    np.savez(path, inputs=rng.integers(0, 256, (SAMPLES, 3, 32, 32), dtype=np.uint8),
             labels=np.arange(SAMPLES) % 10)
    return str(path)


def large_target(path):
    """Loihi 2's arithmetic with room for the CIFAR networks: more cores, and a fan-in and fan-out
    per core above the 4608 axons of a 3x3 convolution over 512 channels."""
    target = yaml.safe_load(LOIHI2.read_text())
    target["name"] = "loihi2-large"
    target["limits"].update(cores=65536, mesh=[256, 256], fan_in_axons_per_core=16384,
                            fan_out_per_core=16384)
    path.write_text(yaml.safe_dump(target))
    return path


def per_connection_loihi2(path):
    """Loihi 2 storing every convolution synapse on its own (no shared kernels)."""
    target = yaml.safe_load(LOIHI2.read_text())
    target["name"] = "loihi2-per-connection"
    target["limits"]["conv_weights"] = "per_connection"
    path.write_text(yaml.safe_dump(target))
    return path


def assert_exported(result, out, data):
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["data"] == data and summary["samples"] == SAMPLES
    assert summary["float_accuracy"] is not None and summary["quantized_accuracy"] is not None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["T", "batch", 3, 32, 32] and manifest["data"] == data
    assert {"model.onnx", "mapping.json", "lava/graph.json", "float/network.json"} <= set(manifest["files"])


def test_a_cifar_shaped_network_exports_on_a_data_file(tmp_path):
    source = untrained_checkpoint(tmp_path / "small.pt", SMALL_RESNET)
    data = cifar_file(tmp_path / "cifar.npz")
    out = tmp_path / "out"
    assert_exported(invoke("export", source, "-o", out, "--data", data, "--json"), out, data)


def test_a_cifar_shaped_network_without_data_is_refused_before_compiling(tmp_path, monkeypatch):
    source = untrained_checkpoint(tmp_path / "small.pt", SMALL_RESNET)
    monkeypatch.setattr(passes, "fold_all", never("folding"))
    assert_clean_failure(invoke("export", source, "-o", tmp_path / "out"), INPUT,
                         "the network's input [3, 32, 32] fits no built-in data set")
    assert_clean_failure(invoke("export", source, "-o", tmp_path / "out", "--data", "mnist5k"), INPUT,
                         "[1, 28, 28]", "[3, 32, 32]")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module", params=RECIPES)
def recipe_checkpoint(request, tmp_path_factory):
    name = request.param
    return name, untrained_checkpoint(tmp_path_factory.mktemp(name) / f"{name}.pt", netfactory.recipe(name))


@pytest.mark.slow   # the full networks: 10 to 90 s each on 2 cores
def test_recipe_exports_end_to_end_where_it_fits(recipe_checkpoint, tmp_path):
    name, source = recipe_checkpoint
    data = cifar_file(tmp_path / "cifar.npz")
    out = tmp_path / name
    result = invoke("export", source, "-o", out, "--target", large_target(tmp_path / "large.yaml"),
                    "--data", data, "--json")
    assert_exported(result, out, data)


@pytest.mark.slow   # builds the full networks
def test_recipe_that_does_not_fit_one_chip_fails_fast_with_the_design_rule(recipe_checkpoint, tmp_path,
                                                                            monkeypatch):
    name, source = recipe_checkpoint
    monkeypatch.setattr(compiler, "fidelity", never("fidelity"))
    # ResNet-20 fits one Loihi 2 chip when its kernels are shared (test below), not otherwise
    target = per_connection_loihi2(tmp_path / "t.yaml") if name == "resnet20" else "loihi2"
    start = time.monotonic()
    result = invoke("export", source, "-o", tmp_path / "out", "--target", target, "--data", "random:2")
    elapsed = time.monotonic() - start
    assert_clean_failure(result, DESIGN_RULE, "exceeds the target's" if name != "resnet20" else "cores, the target has 128")
    assert not (tmp_path / "out").exists()
    assert elapsed < 120, f"{name}: the design-rule error took {elapsed:.0f} s"


@pytest.mark.slow   # builds the full network
def test_shared_convolution_weights_put_resnet20_on_one_loihi2_chip(tmp_path):
    from snnc.passes.mapping import map_to_cores
    from snnc.targets import load_target

    source = untrained_checkpoint(tmp_path / "resnet20.pt", netfactory.recipe("resnet20"))
    compiled = compiler.compile_source(str(source), "loihi2")
    mapping = map_to_cores(compiled.fixed, load_target("loihi2"))
    assert mapping.totals["cores_used"] <= 128 and mapping.packing["conv_weights"] == "shared"
