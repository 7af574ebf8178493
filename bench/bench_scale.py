"""How snnc's cost grows with the network, from the MNIST convnet to ResNet-19 at full width, in
one run: parameters, cores and chips used, export time and peak memory, and the time per sample of
the integer reference, the cycle simulator (with all its counts) and the dense limit.

The dense limit is the same integer network as plain dense float32 torch ops: every node's
synaptic op on all T x B inputs at once (execute.synaptic_op) and then the population's compiled
rule (execute.fixed_neuron), values freed after their last reader, nothing recorded or counted:
the least work any executor of this network does on this machine. The three are checked to give
the same readout on the same samples.

Networks: models/mnist_srif.pt (the MNIST convnet, 1x28x28) on loihi2, and the recipes
resnet20 (loihi2), vgg16 and resnet19 (bench/targets/loihi2-kapoho-point-wide.yaml: they need
4608 axons into a core, Loihi 2 takes 4096) at 3x32x32 on mnist5k-3x32x32. Their checkpoints come
from --work (bench/deploy_recipes.py trains them there) or, where absent, are the recipe's initial
weights (torch.manual_seed(0)); the table says which. The export is `snnc export --data none`
(compiling and writing every artifact, no fidelity measurement) as its own process.

Usage: .venv/bin/python bench/bench_scale.py [--work DIR] [--networks mnist_convnet,resnet20,vgg16,resnet19]
       [--samples 32] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from timing import best_of, run_snnc, same_traces

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WIDE_SYSTEM = str(ROOT / "bench" / "targets" / "loihi2-kapoho-point-wide.yaml")
# network -> (recipe, target, data)
NETWORKS = {
    "mnist_convnet": ("mnist_srif", "loihi2", "mnist5k"),
    "resnet20": ("resnet20", "loihi2", "mnist5k-3x32x32"),
    "vgg16": ("vgg16", WIDE_SYSTEM, "mnist5k-3x32x32"),
    "resnet19": ("resnet19", WIDE_SYSTEM, "mnist5k-3x32x32"),
}
LIMIT = 1.5   # the cycle simulator's time per sample against the dense limit's, at most


def checkpoint_for(name: str, recipe: str, work: Path, scratch: Path) -> tuple[Path, str]:
    """(checkpoint, what it holds): the shipped or --work checkpoint, else the initial weights."""
    from snnc import models
    from snnc.train import save_checkpoint

    for path in (ROOT / "models" / f"{recipe}.pt", work / f"{recipe}.pt"):
        if path.is_file():
            return path, "trained"
    torch.manual_seed(0)
    path = scratch / f"{name}.pt"
    save_checkpoint(path, models.build(models.load_recipe(ROOT / "models" / f"{recipe}.yaml")).eval(),
                    {"note": "initial weights: bench/bench_scale.py"}, force=True)
    return path, "initial weights"


def parameters(recipe: str) -> int:
    from snnc import models

    return sum(p.numel() for p in models.build(models.load_recipe(ROOT / "models" / f"{recipe}.yaml")).parameters())


def dense_forward(net, x: np.ndarray) -> np.ndarray:
    """The dense limit (module docstring): the readout's per-step values [T, B, classes]."""
    from snnc import execute

    T, B = x.shape[:2]
    last = execute.last_uses(net)
    values = {net.input_node.name: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))}
    for index, node in enumerate(net.nodes):
        if node.op == "input":
            continue
        inputs = [execute.delayed_input(node, values[name], T) if node.delayed else values[name]
                  for name in node.inputs]
        z = execute.synaptic_op(node, [v.reshape((T * B,) + v.shape[2:]) for v in inputs], with_bias=False)
        for name in node.inputs:
            if last[name] == index:
                del values[name]
        z = z.reshape((T, B) + z.shape[1:])
        values[node.name] = z if node.neuron is None else \
            execute.fixed_neuron(node, net.arithmetic).run(z.round_(), T).outputs.to(torch.float32)
    return values[net.nodes[-1].name].numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="Where bench/deploy_recipes.py left its checkpoints.")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--samples", type=int, default=32, help="Samples per timed run.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs of each executor (after a warm-up).")
    args = parser.parse_args()
    from snnc import data, execute
    from snnc.backends import cycle
    from snnc.export_dir import ExportDir
    from snnc.passes.mapping import load_mapping

    print("| network | weights | parameters | cores | chips | export | export peak RSS | reference | "
          "cycle simulator | dense float32 | cycle / dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.networks.split(","):
            recipe, target, data_name = NETWORKS[name]
            checkpoint, weights = checkpoint_for(name, recipe, Path(args.work or scratch), Path(scratch))
            out = Path(scratch) / name
            peak, export_s, _ = run_snnc(["export", str(checkpoint), "-o", str(out), "--target", target,
                                          "--data", "none", "--force"])
            export = ExportDir.open(out)
            net, mapping = export.network, load_mapping(export)
            inputs = data.open_inputs(data_name, data.InputSpec.of(net), args.samples)
            x = inputs.network_input(net, inputs.units(0, inputs.count))
            per_sample = {}
            plan = cycle.plan_chip(net, mapping, export.target)   # once per network, as simulate and verify do
            runs = {"reference": lambda: execute.run(net, x),
                    "cycle": lambda: cycle.simulate(net, mapping, export.target, x, plan=plan)[0],
                    "dense": lambda: dense_forward(net, x)}
            results = {}
            for executor, function in runs.items():
                seconds, results[executor] = best_of(function, args.repeats, warm_up=True)
                per_sample[executor] = seconds / inputs.count
            if not (same_traces(results["reference"], results["cycle"])
                    and np.array_equal(results["reference"].readout_steps, results["dense"])):
                raise SystemExit(f"{name}: the executors disagree")
            ratios[name] = per_sample["cycle"] / per_sample["dense"]
            totals = mapping.totals
            print(f"| {name} | {weights} | {parameters(recipe):,} | {totals['cores_used']} | {totals['chips_used']} | "
                  f"{export_s:.1f} s | {peak:,.0f} MB | {per_sample['reference'] * 1e3:.1f} ms | "
                  f"{per_sample['cycle'] * 1e3:.1f} ms | {per_sample['dense'] * 1e3:.1f} ms | "
                  f"{ratios[name]:.2f}x |", flush=True)
    worst = max(ratios, key=ratios.get)
    verdict = "within" if ratios[worst] <= LIMIT else "OVER"
    print(f"cycle simulator against the dense limit: worst {ratios[worst]:.2f}x ({worst}), {verdict} {LIMIT}x")


if __name__ == "__main__":
    main()
