"""The timer the bench scripts share: the best of several runs of the same call."""
from __future__ import annotations

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
