"""Timing shared by the benchmarks (scripts in this folder import it as ``timing``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest wall time over ``repeats`` calls (after one warm-up) and that call's result."""
    fn()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, result = elapsed, out
    return best, result
