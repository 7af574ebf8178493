"""Peak resident memory and time per sample of `snnc export`, `snnc verify` and `snnc simulate`.

The networks are the shapes of three recipes with a 1x28x28 input (so that mnist5k feeds them) and
their untrained initial weights (torch.manual_seed(0), models.build, save_checkpoint): memory and
time depend on the shapes, not on what the weights learned. The ResNets do not fit a Loihi 2 chip
at 28x28, so they are compiled for bench/targets/loihi2-wide.yaml (loihi2.yaml with wider limits,
not a real chip; see that file). Each command runs as its own process; its peak resident set size
is the ru_maxrss that os.wait4 returns for it (what `/usr/bin/time -f %M` prints).

Usage: .venv/bin/python bench/bench_memory.py [--networks mnist_convnet,resnet20,resnet19]
       [--verify-samples 100] [--simulate-samples 100] [--keep DIR]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from timing import run_snnc

ROOT = Path(__file__).resolve().parent.parent
WIDE = ROOT / "bench" / "targets" / "loihi2-wide.yaml"
FIDELITY_SAMPLES = 1000   # an export measures fidelity on the whole mnist5k test split
# network -> (recipe, target, verify backends)
NETWORKS = {
    "mnist_convnet": ("mnist_srif.yaml", "loihi2", "reference,onnx,onnx-step,cycle"),
    "resnet20": ("resnet20.yaml", str(WIDE), "reference,onnx,cycle"),
    "resnet19": ("resnet19.yaml", str(WIDE), "reference,onnx,cycle"),
}


def untrained_checkpoint(recipe_file: str, path: Path) -> None:
    """The recipe's network with a 1x28x28 input and its initial weights, as a checkpoint."""
    import torch
    import yaml

    from snnc import models
    from snnc.train import save_checkpoint

    recipe = yaml.safe_load((ROOT / "models" / recipe_file).read_text())
    recipe["input_shape"] = [1, 28, 28]
    torch.manual_seed(0)
    model = models.build(recipe).eval()
    save_checkpoint(path, model, {"data": "mnist5k", "note": "untrained: bench/bench_memory.py"}, force=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--verify-samples", type=int, default=100)
    parser.add_argument("--simulate-samples", type=int, default=100)
    parser.add_argument("--keep", default=None, help="Write the checkpoints and exports here (kept).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.keep or scratch)
        work.mkdir(parents=True, exist_ok=True)
        print("| network | command | peak RSS | wall | per sample |")
        print("|---|---|---|---|---|")
        for name in args.networks.split(","):
            recipe, target, backends = NETWORKS[name]
            checkpoint, out = work / f"{name}.pt", work / name
            untrained_checkpoint(recipe, checkpoint)
            runs = [("export", ["export", str(checkpoint), "-o", str(out), "--target", target, "--force"],
                     FIDELITY_SAMPLES),
                    (f"verify {backends}", ["verify", str(out), "--backends", backends, "--samples",
                                            str(args.verify_samples), "--json",
                                            "--save-input", str(work / f"{name}-divergence.npz")],
                     args.verify_samples),
                    ("simulate", ["simulate", str(out), "--samples", str(args.simulate_samples), "--json"],
                     args.simulate_samples)]
            for label, command, samples in runs:
                peak, wall, _ = run_snnc(command)
                print(f"| {name} | {label} ({samples} samples) | {peak:,.0f} MB | {wall:.1f} s | "
                      f"{wall / samples * 1000:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
