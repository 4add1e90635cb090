"""Timing helper shared by the benchmark scripts."""

import time


def timed(fn, *args, repeat=1, **kwargs):
    """Best wall time of ``repeat`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, result
