"""Lava's simulation time per sample for snnc's MNIST networks, spike-exactness included.

    .venv/bin/python bench/bench_lava.py --samples 200
    .venv/bin/python bench/bench_lava.py --samples 50 --drained      # one sample at a time

For each shipped checkpoint (models/mnist_srif.pt, models/mnist_lif.pt; a random network of the
same recipe where one is missing) the test digits of mnist5k are streamed through the Lava
process graph in one run. Reported: building the process objects, Lava's compile + start, the
simulation itself (ms per sample and per step), the integer reference's time on the same digits,
and whether every spike and the readout are equal.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # netfactory, for the random fallback


def network(name: str):
    from snnc import compiler
    from snnc.targets import load_target

    path = ROOT / "models" / f"{name}.pt"
    if path.is_file():
        return compiler.compile_checkpoint(path, "loihi2").fixed, str(path.relative_to(ROOT))
    from netfactory import random_network, recipe

    return compiler.compile_network(random_network(recipe(name), seed=0), load_target("loihi2")).fixed, \
        f"random {name} (no checkpoint)"


def bench(name: str, samples: int, drained: bool) -> dict:
    import numpy as np

    from snnc import execute
    from snnc.backends import lava_backend, reference
    from snnc.data import load_dataset

    net, source = network(name)
    inputs = execute.encode(net, load_dataset("mnist5k").test_images[:samples])
    started = time.perf_counter()
    spec = lava_backend.lava_spec(net)
    period = net.T + spec[0]["latency"] if drained else None
    graph = lava_backend.build_lava_graph(spec, inputs=inputs, period=period)
    built = time.perf_counter() - started
    try:
        graph.run()
        trace = graph.read()
    finally:
        graph.close()
    reference.run(net, inputs[:, :1])   # warm-up: the compiled neuron kernel loads on first use
    started = time.perf_counter()
    ref = reference.run(net, inputs)
    ref_s = time.perf_counter() - started
    exact = all(np.array_equal(ref.spikes[k], trace.spikes[k]) for k in ref.spikes) and \
        np.array_equal(ref.readout, trace.readout)
    run_s = graph.timings["run_s"]
    return {"network": source, "samples": samples, "T": net.T, "latency": spec[0]["latency"],
            "schedule": "drained" if drained else "streamed", "lava_steps": graph.num_steps,
            "processes": len(graph.processes), "build_s": round(built, 3),
            "compile_and_start_s": round(graph.timings["compile_and_start_s"], 3),
            "run_s": round(run_s, 3), "ms_per_sample": round(1000 * run_s / samples, 2),
            "ms_per_step": round(1000 * run_s / graph.num_steps, 3),
            "reference_ms_per_sample": round(1000 * ref_s / samples, 3), "spike_exact": bool(exact)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="test digits per network (default 100)")
    parser.add_argument("--drained", action="store_true",
                        help="leave T + L steps per sample instead of streaming samples back to back")
    parser.add_argument("--networks", nargs="+", default=["mnist_srif", "mnist_lif"])
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = parser.parse_args()
    results = [bench(name, args.samples, args.drained) for name in args.networks]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(f"{r['network']}: {r['samples']} samples, T={r['T']}, latency L={r['latency']}, "
              f"{r['schedule']}, {r['lava_steps']} Lava steps, {r['processes']} processes")
        print(f"  Lava: {r['ms_per_sample']:.2f} ms/sample ({r['ms_per_step']:.3f} ms/step); "
              f"build {r['build_s']:.2f} s, compile+start {r['compile_and_start_s']:.2f} s")
        print(f"  reference: {r['reference_ms_per_sample']:.3f} ms/sample; spike-exact: {r['spike_exact']}")
    return 0 if all(r["spike_exact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
