"""The shipped CIFAR-shaped recipes (models/resnet19.yaml, resnet20.yaml, vgg16.yaml,
sew_resnet18.yaml; input 3x32x32): a small one exports on an .npz of 3x32x32 images and on
mnist5k-3x32x32; at full width each maps onto the bench system (bench/targets/
loihi2-kapoho-point-wide.yaml), and on one Loihi 2 chip, where only ResNet-20 fits (with its
convolution weights shared), the design-rule error says so in one line before any fidelity is
measured; at an eighth of their width each is trained briefly and deployed on every backend
(bench/deploy_recipes.py does it at full width).

The full-width checkpoints are untrained: the recipe's model with random weights, batch-norm
statistics and IMPs (netfactory.random_model), written by save_checkpoint as `snnc train` writes
one. Training would change the numbers in them, not the path through the compiler.
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
ROOT = Path(__file__).resolve().parent.parent
LOIHI2 = ROOT / "targets" / "loihi2.yaml"
BENCH_SYSTEM = ROOT / "bench" / "targets" / "loihi2-kapoho-point-wide.yaml"   # wider cores than Loihi 2's
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


def test_fidelity_on_the_first_samples_of_mnist5k_in_cifar_shape(tmp_path):
    source = untrained_checkpoint(tmp_path / "small.pt", SMALL_RESNET)
    out = tmp_path / "out"
    result = invoke("export", source, "-o", out, "--data", "mnist5k-3x32x32", "--samples", "6", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["data"] == "mnist5k-3x32x32" and summary["samples"] == 6
    assert json.loads((out / "fidelity.json").read_text())["samples"] == 6


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


@pytest.mark.slow   # builds the full networks
def test_recipe_maps_at_full_width_onto_the_bench_system(recipe_checkpoint):
    from snnc.passes.mapping import map_to_cores
    from snnc.targets import load_target

    name, source = recipe_checkpoint
    system = load_target(BENCH_SYSTEM)
    mapping = map_to_cores(compiler.compile_source(str(source), system).fixed, system)
    assert 0 < mapping.totals["cores_used"] <= 8 * 128 and mapping.packing["conv_weights"] == "shared"
    assert len({tuple(core["chip"]) for core in mapping.cores}) == mapping.totals["chips_used"]


@pytest.mark.slow   # builds the full network
def test_shared_convolution_weights_put_resnet20_on_one_loihi2_chip(tmp_path):
    from snnc.passes.mapping import map_to_cores
    from snnc.targets import load_target

    source = untrained_checkpoint(tmp_path / "resnet20.pt", netfactory.recipe("resnet20"))
    compiled = compiler.compile_source(str(source), "loihi2")
    mapping = map_to_cores(compiled.fixed, load_target("loihi2"))
    assert mapping.totals["cores_used"] <= 128 and mapping.packing["conv_weights"] == "shared"


def narrow(name: str) -> dict:
    """The recipe's topology (depth, blocks, neuron, BN, readout) with an eighth of its channels."""
    spec = netfactory.recipe(name)
    params = dict(spec["arch_params"])
    params["channels"] = [max(4, c // 8) for c in params["channels"]]
    if "hidden" in params:
        params["hidden"] = params["hidden"] // 8
    return dict(spec, arch_params=params, name=f"{spec['name']}-narrow")


def report(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow   # trains, then runs every backend: 1 to 2 minutes per recipe on 2 cores
@pytest.mark.parametrize("name", RECIPES)
def test_briefly_trained_recipe_is_deployed_and_verified_on_every_backend(name, tmp_path):
    """Issue 18's deployment at an eighth of the width: `snnc train` for a few steps on the first
    digits of mnist5k-3x32x32, then export, verify (ONNX and the cycle simulator on 100 samples, Lava
    on 2), simulate and energy, each as the command line runs it."""
    recipe, checkpoint, out = tmp_path / f"{name}.yaml", tmp_path / f"{name}.pt", tmp_path / name
    recipe.write_text(yaml.safe_dump(narrow(name)))
    loss = "lts" if narrow(name)["readout"] == "last" else "tet-s"
    trained = invoke("train", recipe, "--data", "mnist5k-3x32x32", "--loss", loss, "--epochs", "1",
                     "--samples", "64", "--test-samples", "20", "--batch-size", "16", "--threads", "2",
                     "-o", checkpoint)
    assert trained.exit_code == 0 and "trained on 64 samples" in trained.output, trained.output
    exported = report(invoke("export", checkpoint, "-o", out, "--samples", "100", "--json"))
    assert exported["data"] == "mnist5k-3x32x32" and exported["samples"] == 100   # what it was trained on
    for backends, samples in (("reference,onnx,cycle", 100), ("reference,lava", 2)):
        verified = report(invoke("verify", out, "--backends", backends, "--samples", samples, "--json"))
        assert verified["equivalent"] and verified["samples"] == samples, verified
    simulated = report(invoke("simulate", out, "--samples", "100", "--json"))
    assert simulated["samples"] == 100 and simulated["accuracy"] == exported["quantized_accuracy"]
    energy = report(invoke("energy", out, "--samples", "100", "--format", "json"))
    totals = energy["totals"]
    assert totals["energy_chip_uj"] > 0 and totals["energy_45nm_estimate_uj"] > 0
    rates = [layer["firing_rate"] for layer in energy["layers"] if layer["firing_rate"] is not None]
    assert 0 < max(rates) < 1   # spikes flow, and no layer fires at every step
