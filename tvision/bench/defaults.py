"""Every benchmark's defaults, in one place: the commands' flags and the functions read them.

Nothing heavy is imported here, so the CLI can show them without loading a benchmark.
"""

from __future__ import annotations

# The classes every benchmark request asks for (the SDK's classify, tritonclient's
# class_count, the client-side path's classification parameter).
TOP_K = 5

# ``tvision bench``: callers per run, and seconds per run (``--quick``: short runs).
CONCURRENCIES = (1, 4, 16, 32)
DURATION_S = 10.0
QUICK_DURATION_S = 2.0

# ``tvision bench --perf-analyzer``: callers per run.
PERF_ANALYZER_CONCURRENCIES = (1, 4, 16)

# ``tvision bench-sdk``.
SDK_CONCURRENCY = 8
SDK_ROUNDS = 3
SDK_DURATION_S = 5.0

# ``tvision bench-preprocess``: timed repeats of each image.
PREPROCESS_REPEATS = 20


def run_duration_s(quick: bool, duration_s: float | None) -> float:
    """Seconds per ``tvision bench`` run: the given ones, else the (quick) default."""
    if duration_s is not None:
        return duration_s
    return QUICK_DURATION_S if quick else DURATION_S


# tvision bench-edge: the edge against Triton's own port, and one image across a slow link.
EDGE_CONCURRENCY, EDGE_ROUNDS, EDGE_DURATION_S = 16, 4, 5.0
EDGE_DELAY_S, EDGE_CALLS = 0.2, 5
