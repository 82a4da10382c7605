"""``tvision tune``: search the serving options for a pod size and a p99 objective."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tvision.cli._common import Subparsers, emit, fail, positive_int, progress_printer

# The search on 2 cores with the defaults: 9 configurations of about 20 s each.
DEFAULT_BUDGET_S = 600.0


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="search instance counts, batching and threads for a pod and a p99 objective "
        "(measured by perf_analyzer against a real server)",
    )
    parser.add_argument(
        "--pod-cpus", type=positive_int, default=os.cpu_count() or 1,
        help="the pod's cores; at most this machine's (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--p99-ms", type=float, default=500.0, help="the p99 objective")
    parser.add_argument("--concurrency", type=positive_int, default=16, help="callers")
    parser.add_argument(
        "--duration-s", type=float, default=6.0, help="seconds of measurement per configuration"
    )
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S,
        help="no configuration starts after this many seconds (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--only", type=lambda text: tuple(text.split(",")), default=None,
        help="comma-separated options to search (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--min-gain", type=float, default=0.03,
        help="a value replaces the best so far only when this fraction better "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--images", type=Path, default=None, metavar="DIR")
    parser.add_argument(
        "--from", dest="from_report", type=Path, default=None, metavar="REPORT",
        help="run the search a JSON report of this command ran, with its parameters",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tvision.bench.images import bench_images, images_in
    from tvision.bench.perf_analyzer import PerfAnalyzerError
    from tvision.server import ServerError
    from tvision.tune import OPTIONS, Search, render, search_from_json, tune

    try:
        if args.from_report is not None:
            search = search_from_json(json.loads(args.from_report.read_text(encoding="utf-8")))
        else:
            search = Search(
                pod_cpus=args.pod_cpus, p99_ms=args.p99_ms, concurrency=args.concurrency,
                duration_s=args.duration_s, budget_s=args.budget_s, only=args.only or OPTIONS,
                min_gain=args.min_gain,
            )  # fmt: skip
        images = images_in(args.images) if args.images else bench_images()
        report = tune(search, images, progress_printer("tune"))
    except (OSError, ValueError, PerfAnalyzerError, ServerError) as exc:
        return fail(exc)
    return emit(render(report), report.to_json(), args.json)
