"""Wall time of `snnc export` on the shipped checkpoints (the whole CLI process, start-up included).

Usage: .venv/bin/python bench/bench_export.py [--repeat N]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = [ROOT / "models" / "mnist_srif.pt", ROOT / "models" / "mnist_lif.pt"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", default="loihi2")
    args = parser.parse_args()
    for checkpoint in CHECKPOINTS:
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as scratch:
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "snnc.cli", "export", str(checkpoint), "-o",
                                f"{scratch}/out", "--target", args.target], check=True, capture_output=True)
                times.append(time.perf_counter() - start)
        print(f"{checkpoint.name}: export {min(times):.2f} s best, {sum(times) / len(times):.2f} s mean "
              f"of {args.repeat} (target {args.target})")


if __name__ == "__main__":
    main()
