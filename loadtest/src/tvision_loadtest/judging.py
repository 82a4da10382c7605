"""The end of a run: its totals judged once by the gate, the baseline saved, the report
written, and the exit code set."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner

from tvision_loadtest import flags, gate, quality, report, server_metrics
from tvision_loadtest.images import image_mix
from tvision_loadtest.recording import RUN


def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    """Locust's ``quitting`` hook: judge the run once, where its totals are: the master, or
    a single process.

    The verdict sets the exit code explicitly, in every case: Locust's own default (exit 1
    on any failed request) would override a failure-ratio objective that tolerates some.
    Workers hold no totals and are not judged; they exit 0.
    """
    options = environment.parsed_options
    if options is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        environment.process_exit_code = gate.EXIT_PASSED
        return
    run = summary(environment, options.images)
    try:
        baseline = gate.load_baseline(Path(options.baseline)) if options.baseline else None
    except ValueError as exc:
        print(f"SLO gate COULD NOT RUN: {exc}")
        environment.process_exit_code = gate.EXIT_COULD_NOT_RUN
        return
    verdict = gate.judge(run, flags.objectives(options, baseline))
    print("\n".join(verdict.lines()), flush=True)
    if options.save_baseline and run.ran:
        gate.save_baseline(run, Path(options.save_baseline))
        print(f"baseline saved: {options.save_baseline}")
    if options.report:
        write_report(environment, verdict, run, Path(options.report))
    environment.process_exit_code = verdict.exit_code


def summary(environment: Environment, images: str) -> gate.RunSummary:
    """The run's totals as Locust counted them, with the images sent and the config read."""
    stats = environment.stats.total
    return gate.RunSummary(
        requests=stats.num_requests,
        failures=stats.num_failures,
        throughput_rps=float(stats.total_rps),
        p50_ms=float(stats.get_response_time_percentile(0.5) or 0.0),
        p95_ms=float(stats.get_response_time_percentile(0.95) or 0.0),
        p99_ms=float(stats.get_response_time_percentile(0.99) or 0.0),
        duration_s=max(0.0, stats.last_request_timestamp - stats.start_time)
        if stats.last_request_timestamp
        else 0.0,
        images=image_mix(images),
        server_config=RUN.server_config,
    )


def user_arguments(argv: list[str]) -> list[str]:
    """The command line as the user gave it: without the locustfile that the
    ``tvision-loadtest`` wrapper adds."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-f", "--locustfile"):
            skip = True
        else:
            kept.append(arg)
    return kept


def write_report(
    environment: Environment, verdict: gate.Verdict, run: gate.RunSummary, path: Path
) -> None:
    """The HTML report, with the server's side from a second metrics scrape."""
    options = environment.parsed_options
    loads, predictions = None, None
    note = RUN.metrics_note
    if options.metrics_url and RUN.metrics_before is not None:
        try:
            text = server_metrics.read(options.metrics_url)
            loads = server_metrics.difference(RUN.metrics_before, server_metrics.parse(text))
            predictions = quality.difference(
                RUN.quality_before or {}, quality.parse(text, options.model)
            )
        except OSError as exc:
            note = f"metrics endpoint {options.metrics_url} unreadable: {exc}"
    page = report.render_html(
        verdict, run, RUN.samples, loads, host=environment.host or "",
        command=shlex.join(["tvision-loadtest", *user_arguments(sys.argv[1:])]),
        ensemble=options.model, server_note=note, more=quality.section(predictions, note),
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    print(f"report: {path}")
