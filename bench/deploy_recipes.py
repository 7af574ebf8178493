"""The papers' four CIFAR-shaped networks at full width, trained briefly and deployed end to end
with the commands a user runs: `snnc train` (one epoch on the first training samples of
mnist5k-3x32x32, so that firing rates are those of trained weights rather than of random ones),
`export`, `verify` against the reference on ONNX and the cycle simulator (100 samples) and on Lava
(2 samples), `simulate` and `energy`. Each step's JSON is kept in the work directory; a table of
what each step measured and took is printed as it goes.

ResNet-20 fits one Loihi 2 chip (its convolution weights shared); the other three need 4608 axons
into a core where Loihi 2 takes 4096, so they go to bench/targets/loihi2-kapoho-point-wide.yaml
(Kapoho Point's 8 chips with wider cores; BENCH ONLY, see that file).

Usage: .venv/bin/python bench/deploy_recipes.py --work DIR [--recipes resnet20,vgg16,sew_resnet18,resnet19]
       [--train-samples 600] [--samples 100] [--lava-samples 2]
A checkpoint already in DIR is reused (delete it to train again).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from timing import run_snnc

ROOT = Path(__file__).resolve().parent.parent
WIDE_SYSTEM = str(ROOT / "bench" / "targets" / "loihi2-kapoho-point-wide.yaml")
TARGETS = {"resnet20": "loihi2", "vgg16": WIDE_SYSTEM, "sew_resnet18": WIDE_SYSTEM, "resnet19": WIDE_SYSTEM}
DATA = "mnist5k-3x32x32"
TEST_SAMPLES = 200   # the test accuracy `snnc train` reports after its epoch


def train_args(recipe: Path, checkpoint: Path, train_samples: int) -> list[str]:
    """One epoch, with the loss the recipe's readout implies (LTS for a last-step readout, else TET-S)."""
    loss = "lts" if yaml.safe_load(recipe.read_text()).get("readout") == "last" else "tet-s"
    return ["train", str(recipe), "--data", DATA, "--loss", loss, "--epochs", "1", "--lr", "3e-3",
            "--batch-size", "32", "--samples", str(train_samples), "--test-samples", str(TEST_SAMPLES),
            "-o", str(checkpoint)]


def outcome(step: str, stdout: str) -> str:
    """What a step measured, in a few words, from its JSON (or its last line)."""
    if step == "train":
        return stdout.strip().splitlines()[-1]
    report = json.loads(stdout)
    if step == "export":
        return (f"float {report['float_accuracy']:.3f}, quantized {report['quantized_accuracy']:.3f}, "
                f"{report['samples']} samples")
    if step.startswith("verify"):
        return f"equivalent: {report['equivalent']} on {report['samples']} samples"
    if step == "simulate":
        return (f"accuracy {report['accuracy']:.3f}, {report['cores_used']} cores on {report['chips_used']} "
                f"chips, {report['latency_us_per_sample']:.0f} us per sample on chip")
    totals = report["totals"]
    return (f"chip {totals['energy_chip_uj']:.1f} uJ, 45 nm estimate {totals['energy_45nm_estimate_uj']:.1f} uJ "
            f"per sample")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="Directory for checkpoints, exports and reports (kept).")
    parser.add_argument("--recipes", default=",".join(TARGETS))
    parser.add_argument("--train-samples", type=int, default=600)
    parser.add_argument("--samples", type=int, default=100, help="Fidelity, verify, simulate and energy samples.")
    parser.add_argument("--lava-samples", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    samples = ["--samples", str(args.samples)]
    print("| network | step | result | peak RSS | wall |")
    print("|---|---|---|---|---|")
    for name in args.recipes.split(","):
        checkpoint, out = work / f"{name}.pt", work / name
        steps = [("export", ["export", str(checkpoint), "-o", str(out), "--target", TARGETS[name], "--force",
                             *samples, "--json"]),
                 ("verify reference,onnx,cycle", ["verify", str(out), "--backends", "reference,onnx,cycle",
                                                  *samples, "--json"]),
                 ("verify reference,lava", ["verify", str(out), "--backends", "reference,lava", "--samples",
                                            str(args.lava_samples), "--json"]),
                 ("simulate", ["simulate", str(out), *samples, "--json"]),
                 ("energy", ["energy", str(out), *samples, "--format", "json"])]
        if not checkpoint.exists():
            steps.insert(0, ("train", train_args(ROOT / "models" / f"{name}.yaml", checkpoint, args.train_samples)))
        for step, command in steps:
            peak, wall, stdout = run_snnc(command)
            (work / f"{name}.{step.split()[0]}{'-lava' if 'lava' in step else ''}.out").write_text(stdout)
            print(f"| {name} | {step} | {outcome(step, stdout)} | {peak:,.0f} MB | {wall:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
