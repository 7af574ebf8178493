"""Throughput of the spike-exact ONNX model (onnxruntime, CPU) against the integer reference.

    .venv/bin/python bench/bench_onnx.py [--samples 1000] [--checkpoint models/mnist_srif.pt]

Both run the same fixed-point network on the same encoded MNIST-5k test digits (repeated when
--samples exceeds 1000), each timed as the best of --repeats runs after one warm-up; session
creation is timed separately. The two results are checked to be identical before anything is
printed. Without a checkpoint (models/mnist_srif.pt absent) a random network of the mnist_srif
recipe stands in (tests/netfactory.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snnc import execute, onnx_graph  # noqa: E402
from snnc.backends import onnx_backend  # noqa: E402
from snnc.compiler import compile_checkpoint, compile_network  # noqa: E402
from snnc.data import load_dataset  # noqa: E402
from snnc.targets import load_target  # noqa: E402
from timing import best_of  # noqa: E402


def _compiled(checkpoint: str | None, target: str):
    path = Path(checkpoint) if checkpoint else ROOT / "models" / "mnist_srif.pt"
    if path.is_file():
        return compile_checkpoint(path, target), str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    if checkpoint:
        sys.exit(f"error: {checkpoint} does not exist")
    sys.path.insert(0, str(ROOT / "tests"))
    from netfactory import random_network, recipe

    return compile_network(random_network(recipe("mnist_srif")), load_target(target)), \
        "random mnist_srif network (no checkpoint)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--target", default="loihi2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    compiled, source = _compiled(args.checkpoint, args.target)
    images = load_dataset("mnist5k").test_images
    images = np.concatenate([images] * (-(-args.samples // len(images))))[:args.samples]
    inputs = execute.encode(compiled.fixed, images)

    ref_time, ref = best_of(lambda: execute.run(compiled.fixed, inputs), args.repeats, warm_up=True)
    start = time.perf_counter()
    lean = onnx_backend.session(onnx_graph.fixed_model(compiled.fixed, spikes=False))
    session_time = time.perf_counter() - start
    full = onnx_backend.session(onnx_graph.fixed_model(compiled.fixed, spikes=True))
    lean_time, lean_trace = best_of(lambda: onnx_backend.run_session(lean, inputs), args.repeats, warm_up=True)
    full_time, full_trace = best_of(lambda: onnx_backend.run_session(full, inputs), args.repeats, warm_up=True)
    if not (np.array_equal(lean_trace.readout, ref.readout) and np.array_equal(full_trace.readout, ref.readout)
            and all(np.array_equal(full_trace.spikes[k], v) for k, v in ref.spikes.items())):
        sys.exit("error: ONNX and the integer reference disagree")

    n = args.samples
    report = {
        "network": source, "target": args.target, "samples": n, "T": compiled.fixed.T,
        "cpu_count": os.cpu_count(), "repeats": args.repeats,
        "reference_samples_per_s": n / ref_time,
        "onnx_readout_samples_per_s": n / lean_time,
        "onnx_with_spikes_samples_per_s": n / full_time,
        "speedup_readout": ref_time / lean_time,
        "speedup_with_spikes": ref_time / full_time,
        "onnx_session_create_s": session_time,
        "identical": True,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"network: {source} ({args.target}, T={compiled.fixed.T}), {n} samples, "
          f"best of {args.repeats}, {os.cpu_count()} CPUs; results identical")
    print(f"integer reference (snnc.execute):     {report['reference_samples_per_s']:9.1f} samples/s")
    print(f"onnxruntime model.onnx (readout):     {report['onnx_readout_samples_per_s']:9.1f} samples/s  "
          f"({report['speedup_readout']:.2f}x)")
    print(f"onnxruntime model.onnx (+all spikes): {report['onnx_with_spikes_samples_per_s']:9.1f} samples/s  "
          f"({report['speedup_with_spikes']:.2f}x)")
    print(f"onnxruntime session creation:         {session_time:9.3f} s")


if __name__ == "__main__":
    main()
