"""What the bench scripts share: the best of several runs of the same call, one `snnc` command run
as its own process with its peak memory, and the check that two executors' traces are identical."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def best_of(function, repeats: int, warm_up: bool = False) -> tuple[float, object]:
    """(fastest wall time in seconds, the last result) over `repeats` calls, after one untimed call
    when `warm_up` (first-call costs: kernel loading, caches)."""
    if warm_up:
        function()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_snnc(args: list[str]) -> tuple[float, float, str]:
    """(peak resident MB, wall seconds, stdout) of `snnc ARGS` run as a child process; the peak is
    the ru_maxrss that os.wait4 returns for it (what `/usr/bin/time -f %M` prints). Exits with the
    command's last error line when it fails."""
    command = [sys.executable, "-m", "snnc.cli", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, error = out.read().decode(), err.read().decode(errors="replace").strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"snnc {' '.join(args)} failed: {error.splitlines()[-1] if error else status}")
    return usage.ru_maxrss / 1024, wall, stdout


def same_traces(a, b) -> bool:
    """Whether two execute.Trace hold the same spikes of every layer and the same readout."""
    import numpy as np

    return (a.spikes.keys() == b.spikes.keys() and all(np.array_equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
            and np.array_equal(a.readout_steps, b.readout_steps) and np.array_equal(a.readout, b.readout))
