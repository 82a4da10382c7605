"""A closed-loop load generator: N threads call back to back for a fixed time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

Item = TypeVar("Item")


@dataclass
class LoadResult:
    calls: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    units: int = 0  # what the calls returned, summed: wire bytes, or images in a batch
    errors: int = 0

    def percentile_ms(self, fraction: float) -> float:
        return percentile_ms(self.latencies_s, fraction)


def percentile_ms(latencies_s: Sequence[float], fraction: float) -> float:
    if not latencies_s:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, fraction * 100))


def run_closed_loop(
    call: Callable[[Item], int], items: Sequence[Item], concurrency: int, duration_s: float
) -> LoadResult:
    """``concurrency`` threads call ``call`` on ``items`` in turn for ``duration_s``.

    ``call`` returns a count (bytes sent, images done) that is summed into ``units``; a call
    that raises counts as an error and its latency is not recorded.
    """
    result = LoadResult()
    counter = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def worker() -> None:
        nonlocal counter
        local = LoadResult()
        while time.perf_counter() < stop_at:
            with lock:
                item = items[counter % len(items)]
                counter += 1
            started = time.perf_counter()
            try:
                local.units += call(item)
            except Exception:
                local.errors += 1
                continue
            local.latencies_s.append(time.perf_counter() - started)
        with lock:
            result.latencies_s.extend(local.latencies_s)
            result.units += local.units
            result.errors += local.errors

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    result.calls = len(result.latencies_s)
    return result
