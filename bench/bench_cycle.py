"""snnc's cycle-level simulator against Lava's simulator and the integer reference, same network,
same inputs, spikes checked identical.

    .venv/bin/python bench/bench_cycle.py [--samples 64] [--network mnist_lif] [--threads 1]

The network is the shipped checkpoint models/NETWORK.pt compiled for loihi2 (a random network of the
same recipe when the checkpoint is missing), the inputs the first --samples MNIST-5k test digits.
Timed, each the best of --repeats runs: the cycle simulator (`snnc.backends.cycle.simulate` with the
mapping computed beforehand; mapping time printed apart) and the integer reference
(`snnc.backends.reference.run`), both after one untimed run (their compiled kernels load on first
use), and Lava (`snnc.backends.lava_backend.run`: building the process
graph, Lava's compile and start, streaming every sample, reading the results). Lava's fixed start-up
is separated from its per-sample cost by also timing it on a quarter of the samples; both ratios are
printed. Every layer's spikes and the readout of the three are compared before the ratios.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # netfactory, for the random fallback

from timing import best_of, same_traces  # noqa: E402


def _network(name: str):
    from snnc import compiler
    from snnc.targets import load_target

    path = ROOT / "models" / f"{name}.pt"
    if path.is_file():
        return compiler.compile_checkpoint(path, "loihi2").fixed, str(path.relative_to(ROOT))
    from netfactory import random_network, recipe

    net = compiler.compile_network(random_network(recipe(name), seed=0), load_target("loihi2")).fixed
    return net, f"random {name} network (no checkpoint)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--network", default="mnist_lif", choices=["mnist_lif", "mnist_srif"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lava-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of torch and of snnc's compiled kernels (0: their default, one per core)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import numba
    import torch

    from snnc import execute
    from snnc.backends import cycle, reference
    from snnc.data import load_dataset
    from snnc.passes.mapping import map_to_cores
    from snnc.targets import load_target

    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    net, source = _network(args.network)
    target = load_target(net.metadata["target"])
    inputs = execute.encode(net, load_dataset("mnist5k").test_images[:args.samples])
    n, quarter = args.samples, max(1, args.samples // 4)

    start = time.perf_counter()
    mapping = map_to_cores(net, target)
    map_s = time.perf_counter() - start
    cycle_s, (cycle_trace, counts) = best_of(lambda: cycle.simulate(net, mapping, target, inputs),
                                             args.repeats, warm_up=True)
    ref_s, ref_trace = best_of(lambda: reference.run(net, inputs), args.repeats, warm_up=True)

    try:
        from snnc.backends import lava_backend
    except ImportError as error:   # pragma: no cover - the Lava backend ships with snnc
        sys.exit(f"error: the Lava backend is not importable ({error})")
    lava_s, lava_trace = best_of(lambda: lava_backend.run(net, inputs), args.lava_repeats)
    lava_small_s, _ = best_of(lambda: lava_backend.run(net, inputs[:, :quarter]), args.lava_repeats)
    lava_marginal = (lava_s - lava_small_s) / (n - quarter) if n > quarter else float("nan")

    report = {
        "network": source, "target": target.name, "samples": n, "T": net.T,
        "chip_steps_per_sample": counts.steps, "threads": {"torch": torch.get_num_threads(),
                                                           "kernels": numba.get_num_threads()},
        "cores_used": mapping.totals["cores_used"], "mapping_s": map_s,
        "identical": {"cycle_vs_reference": same_traces(cycle_trace, ref_trace),
                      "cycle_vs_lava": same_traces(cycle_trace, lava_trace)},
        "ms_per_sample": {"cycle": 1e3 * cycle_s / n, "reference": 1e3 * ref_s / n,
                          "lava_end_to_end": 1e3 * lava_s / n, "lava_marginal": 1e3 * lava_marginal},
        "lava_s": {"samples": lava_s, "quarter": lava_small_s},
        "speedup_vs_lava_end_to_end": lava_s / cycle_s,
        "speedup_vs_lava_marginal": lava_marginal * n / cycle_s,
        "speedup_vs_reference": ref_s / cycle_s,
        "modelled_chip": {"latency_us_per_sample": float(counts.latency_ns.mean() / 1e3),
                          "samples_per_second": float(1e9 / counts.latency_ns.mean())},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        ms = report["ms_per_sample"]
        print(f"network: {source} on {target.name}, {n} MNIST-5k digits, T={net.T}, "
              f"{counts.steps} chip steps per sample, {report['cores_used']} cores, "
              f"threads: torch {report['threads']['torch']}, kernels {report['threads']['kernels']}")
        print(f"spikes identical: cycle = reference: {report['identical']['cycle_vs_reference']}, "
              f"cycle = Lava: {report['identical']['cycle_vs_lava']}")
        print(f"cycle simulator  {ms['cycle']:9.3f} ms/sample   (mapping once: {map_s:.2f} s)")
        print(f"integer reference{ms['reference']:9.3f} ms/sample   -> cycle is {report['speedup_vs_reference']:.2f}x")
        print(f"Lava end to end  {ms['lava_end_to_end']:9.3f} ms/sample   -> cycle is "
              f"{report['speedup_vs_lava_end_to_end']:.1f}x faster ({lava_s:.2f} s for {n} samples)")
        print(f"Lava per sample  {ms['lava_marginal']:9.3f} ms/sample   -> cycle is "
              f"{report['speedup_vs_lava_marginal']:.1f}x faster (start-up removed: {n} vs {quarter} samples)")
        print(f"modelled chip: {report['modelled_chip']['latency_us_per_sample']:.1f} us per sample, "
              f"{report['modelled_chip']['samples_per_second']:.0f} samples/s (a model, not a measurement)")
    if not report["identical"]["cycle_vs_reference"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
