"""What the judging process (master or single) records while the run goes on: the start,
a sample of the current figures every second, the server's counters and config before."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import WorkerRunner

from tvision_loadtest import quality, report, server_config, server_metrics

SAMPLE_INTERVAL_S = 1.0


@dataclass
class Recording:
    started: float = 0.0
    samples: list[report.Sample] = field(default_factory=list)
    metrics_before: server_metrics.Counters | None = None
    quality_before: quality.Counters | None = None
    metrics_note: str = ""
    server_config: str = ""


# The run in progress; one per process, read by ``judging`` when Locust quits.
RUN = Recording()


def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    """Locust's ``test_start`` hook: record the start and begin sampling (not on workers)."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    RUN.started = time.monotonic()
    RUN.samples.clear()
    if options.metrics_url:
        try:
            text = server_metrics.read(options.metrics_url)
            RUN.metrics_before = server_metrics.parse(text)
            RUN.quality_before = quality.parse(text, options.model)
        except OSError as exc:
            RUN.metrics_note = f"metrics endpoint {options.metrics_url} unreadable: {exc}"
    try:
        RUN.server_config = server_config.digest(environment.host or "", options.model)
    except Exception as exc:  # the gate still judges without it
        RUN.server_config = ""
        # Only a baseline keeps or compares the digest: without one, nothing is missing.
        if options.baseline or options.save_baseline:
            print(
                f"note: could not read the model config for the baseline: {exc}",
                file=sys.stderr,
            )
    gevent.spawn(_sample, environment)


def _sample(environment: Environment) -> None:
    total = environment.stats.total
    runner = environment.runner
    while True:
        gevent.sleep(SAMPLE_INTERVAL_S)

        def current(percentile: float) -> float:
            return float(total.get_current_response_time_percentile(percentile) or 0.0)

        RUN.samples.append(
            report.Sample(
                elapsed_s=time.monotonic() - RUN.started,
                users=runner.user_count if runner else 0,
                rps=float(total.current_rps or 0.0),
                p50_ms=current(0.5),
                p95_ms=current(0.95),
                p99_ms=current(0.99),
            )
        )
