"""``tvision bench``, ``bench-preprocess``, ``bench-sdk`` and ``bench-edge``: the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvision.bench.defaults import (
    CONCURRENCIES,
    DURATION_S,
    EDGE_CALLS,
    EDGE_CONCURRENCY,
    EDGE_DELAY_S,
    EDGE_DURATION_S,
    EDGE_ROUNDS,
    PERF_ANALYZER_CONCURRENCIES,
    PREPROCESS_REPEATS,
    QUICK_DURATION_S,
    SDK_CONCURRENCY,
    SDK_DURATION_S,
    SDK_ROUNDS,
)
from tvision.bench.report import PATHS
from tvision.cli._common import (
    Subparsers,
    emit,
    fail,
    int_list,
    name_list,
    positive_int,
    progress_printer,
)
from tvision.exit_codes import EXIT_OK

# What ``--quick`` took, as the README's Performance section says it (68 s measured there).
QUICK_RUN_TIME = "about a minute on 2 cores"


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    _add_bench_parser(subparsers)
    preprocess = subparsers.add_parser(
        "bench-preprocess", help="preprocessing cost per image, each speed-up against its baseline"
    )
    preprocess.add_argument("--repeats", type=positive_int, default=PREPROCESS_REPEATS)
    preprocess.set_defaults(handler=run_bench_preprocess)

    sdk = subparsers.add_parser("bench-sdk", help="the SDK against raw tritonclient")
    sdk.add_argument("--concurrency", type=positive_int, default=SDK_CONCURRENCY)
    sdk.add_argument("--rounds", type=positive_int, default=SDK_ROUNDS)
    sdk.add_argument("--duration-s", type=float, default=SDK_DURATION_S)
    sdk.add_argument("--json", type=Path, default=None)
    sdk.set_defaults(handler=run_bench_sdk)

    front = subparsers.add_parser(
        "bench-edge", help="the edge (nginx) against Triton's own port, and across a slow link"
    )
    front.add_argument("--concurrency", type=positive_int, default=EDGE_CONCURRENCY)
    front.add_argument("--rounds", type=positive_int, default=EDGE_ROUNDS)
    front.add_argument("--duration-s", type=float, default=EDGE_DURATION_S)
    front.add_argument(
        "--delay-ms", type=positive_int, default=round(EDGE_DELAY_S * 1000),
        help="the slow link's added round trip (default: %(default)s)",
    )  # fmt: skip
    front.add_argument("--calls", type=positive_int, default=EDGE_CALLS)
    front.add_argument(
        "--repository", type=Path, default=None,
        help="serve this exported repository (default: export the default model afresh)",
    )  # fmt: skip
    front.add_argument("--json", type=Path, default=None)
    front.set_defaults(handler=run_bench_edge)


def _add_bench_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench", help="served ensemble vs in-process limit, client-side and naive paths"
    )
    parser.add_argument("--quick", action="store_true", help=f"short runs ({QUICK_RUN_TIME})")
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help=f"seconds per run (default: {DURATION_S:g}; --quick: {QUICK_DURATION_S:g})",
    )
    parser.add_argument(
        "--concurrency", type=int_list, default=None,
        help=f"callers per run (default: {_joined(CONCURRENCIES)}; "
        f"--perf-analyzer: {_joined(PERF_ANALYZER_CONCURRENCIES)})",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change an exported serving option for this run, e.g. classifier_instances=1",
    )
    parser.add_argument(
        "--paths",
        type=name_list,
        default=PATHS,
        help="comma-separated subset of limit,served,client-side,naive (ratios need all)",
    )
    parser.add_argument(
        "--images", type=Path, default=None, metavar="DIR",
        help="send the images in DIR in turn instead of the bench mix",
    )  # fmt: skip
    parser.add_argument(
        "--perf-analyzer", action="store_true",
        help="measure the served ensemble with NVIDIA's perf_analyzer beside tvision bench's "
        "served path and the in-process limit (install it with `make perf-analyzer`)",
    )  # fmt: skip
    parser.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from tvision.bench.images import images_in
    from tvision.bench.render import plot, render_table
    from tvision.bench.run import run_benchmark
    from tvision.cli._options import parse_assignments
    from tvision.server import ServerError

    if args.perf_analyzer:
        return _run_perf_analyzer(args)
    try:
        overrides = parse_assignments(args.set)
        report = run_benchmark(
            quick=args.quick,
            concurrencies=args.concurrency or CONCURRENCIES,
            duration_s=args.duration_s,
            progress=progress_printer("bench"),
            overrides=overrides,
            paths=args.paths,
            images=images_in(args.images) if args.images else None,
        )
    except (ValueError, ServerError) as exc:
        return fail(exc)
    code = emit(render_table(report), report.to_json(), args.json)
    if code == EXIT_OK and args.plot:
        try:
            plot(report, args.plot)
        except OSError as exc:
            return fail(f"cannot write the plot: {exc}")
    return code


def _run_perf_analyzer(args: argparse.Namespace) -> int:
    from tvision.bench.defaults import run_duration_s
    from tvision.bench.images import images_in
    from tvision.bench.perf_analyzer import PerfAnalyzerError, render
    from tvision.bench.run import run_perf_analyzer_comparison
    from tvision.server import ServerError

    unsupported = [
        flag for flag, given in
        (("--set", args.set), ("--plot", args.plot), ("--paths", args.paths != PATHS)) if given
    ]  # fmt: skip
    if unsupported:
        dropped = ", ".join(unsupported)
        return fail(f"--perf-analyzer measures the exported defaults: drop {dropped}")
    try:
        report = run_perf_analyzer_comparison(
            concurrencies=args.concurrency or PERF_ANALYZER_CONCURRENCIES,
            duration_s=run_duration_s(args.quick, args.duration_s),
            progress=progress_printer("bench"),
            images=images_in(args.images) if args.images else None,
        )
    except (ValueError, ServerError, PerfAnalyzerError) as exc:
        return fail(exc)
    return emit(render(report), report.to_json(), args.json)


def _joined(values: tuple[int, ...]) -> str:
    return ",".join(str(value) for value in values)


def run_bench_preprocess(args: argparse.Namespace) -> int:
    from tvision.bench.preprocess import render_preprocess_table, run_preprocess_benchmark

    print(render_preprocess_table(run_preprocess_benchmark(args.repeats)))
    return EXIT_OK


def run_bench_sdk(args: argparse.Namespace) -> int:
    from tvision.bench.sdk import render_sdk_table, run_sdk_benchmark
    from tvision.server import ServerError

    try:
        report = run_sdk_benchmark(
            concurrency=args.concurrency,
            rounds=args.rounds,
            duration_s=args.duration_s,
            progress=progress_printer("bench-sdk"),
        )
    except ServerError as exc:
        return fail(exc)
    return emit(render_sdk_table(report), report.to_json(), args.json)


def run_bench_edge(args: argparse.Namespace) -> int:
    from tvision.bench.edge import render_edge_table, run_edge_benchmark
    from tvision.server import ServerError

    try:
        report = run_edge_benchmark(
            concurrency=args.concurrency, rounds=args.rounds, duration_s=args.duration_s,
            delay_s=args.delay_ms / 1000, calls=args.calls, repository=args.repository,
            progress=progress_printer("bench-edge"),
        )  # fmt: skip
    except ServerError as exc:
        return fail(exc)
    return emit(render_edge_table(report), report.to_json(), args.json)
