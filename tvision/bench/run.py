"""``tvision bench``: export into a temporary repository, serve it, run the chosen paths."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvision.bench.defaults import CONCURRENCIES, run_duration_s
from tvision.bench.images import BenchImage, bench_images
from tvision.bench.paths import BenchPaths, write_naive_baseline
from tvision.bench.perf_analyzer import PerfAnalyzerReport, PerfAnalyzerTool, compare, edge_limits
from tvision.bench.report import NAIVE_COMPARISON_CONCURRENCY, PATHS, BenchReport, RunResult
from tvision.server import TritonServer, edge_limits_for, temporary_server
from tvision_export.spec import DEFAULT_SPEC

if TYPE_CHECKING:  # pragma: no cover
    from tvision_export.options import ServingOptions

Progress = Callable[[str], None]


def check_request(paths: Sequence[str], concurrencies: Sequence[int]) -> None:
    """Raises ValueError for a run that cannot produce what it was asked for."""
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")
    if set(paths) == set(PATHS) and NAIVE_COMPARISON_CONCURRENCY not in concurrencies:
        raise ValueError(
            f"--concurrency must include {NAIVE_COMPARISON_CONCURRENCY} "
            "(the naive comparison) when every path runs"
        )


def bench_options(overrides: dict[str, Any] | None = None) -> ServingOptions:
    """The exported options: ``overrides`` (``--set``) on the defaults of their target, so
    ``target=gpu`` gets the gpu target's defaults and ``pod_cpus`` sizing.

    Raises:
        ValueError: the combination is not valid.
    """
    from tvision_export.options import ServingOptions

    return ServingOptions(**(overrides or {}))


def run_benchmark(
    quick: bool = False,
    concurrencies: Sequence[int] = CONCURRENCIES,
    duration_s: float | None = None,
    progress: Progress = lambda _message: None,
    overrides: dict[str, Any] | None = None,
    paths: Sequence[str] = PATHS,
    images: list[BenchImage] | None = None,
) -> BenchReport:
    """Run the chosen paths; ``overrides`` changes the exported ``ServingOptions``;
    ``images`` replaces the bench mix.

    Raises:
        ValueError: unknown paths, or a full run without the naive comparison's concurrency.
        ServerError: the server did not start with this export (``--set target=gpu``
            here: the embedded server has no onnxruntime backend).
    """
    check_request(paths, concurrencies)
    duration = run_duration_s(quick, duration_s)
    options = bench_options(overrides)
    images = images or bench_images()
    results: list[RunResult] = []
    # Every caller comes from this machine's one address: the edge's per-client cap (16 by
    # default) would refuse the higher concurrencies' calls, not measure them.
    edge = functools.partial(edge_limits_for, max_requests_per_client=max(concurrencies))
    with _served_export(options, progress, edge, naive="naive" in paths) as served:
        bench = BenchPaths(served.server, DEFAULT_SPEC, options, images, duration)
        if "limit" in paths:
            progress("in-process limit")
            results.append(bench.limit(served.onnx_path))
        for concurrency in concurrencies:
            if "served" in paths:
                progress(f"served ensemble, concurrency {concurrency}")
                results.append(bench.served(concurrency, DEFAULT_SPEC.name))
            if "client-side" in paths:
                progress(f"client-side preprocessing, concurrency {concurrency}")
                results.append(bench.client_side(concurrency))
            if "naive" in paths:
                progress(f"naive ensemble, concurrency {concurrency}")
                results.append(bench.naive(concurrency))
    return BenchReport(
        cpu_count=os.cpu_count(),
        quick=quick,
        duration_s=duration,
        serving_options=asdict(options),
        changed_options=sorted(overrides or {}),
        image_bytes={image.name: len(image.data) for image in images},
        results=results,
    )


def run_perf_analyzer_comparison(
    concurrencies: Sequence[int],
    duration_s: float,
    progress: Progress = lambda _message: None,
    images: list[BenchImage] | None = None,
    tool: PerfAnalyzerTool | None = None,
) -> PerfAnalyzerReport:
    """``tvision bench --perf-analyzer``: see ``tvision.bench.perf_analyzer``.

    Raises:
        PerfAnalyzerError: perf_analyzer is not installed, or it failed.
        ServerError: the server did not start.
    """
    tool = tool or PerfAnalyzerTool.installed()
    options = bench_options()
    images = images or bench_images()
    edge = functools.partial(edge_limits, concurrency=max(concurrencies))
    with _served_export(options, progress, edge) as served:
        bench = BenchPaths(served.server, DEFAULT_SPEC, options, images, duration_s)
        return compare(bench, tool, served.onnx_path, concurrencies, progress)


@dataclass
class _Served:
    server: TritonServer
    onnx_path: Path


@contextmanager
def _served_export(
    options: ServingOptions,
    progress: Progress,
    edge: Callable[[Path], Any],
    naive: bool = False,
) -> Iterator[_Served]:
    """Export the default model into a temporary repository (with the naive baseline beside
    it if asked), and serve it behind the edge ``edge(repository)`` gives; killed afterwards."""
    from tvision_export.exporter import classifier_source, export_model

    with tempfile.TemporaryDirectory(prefix="tvision-bench-") as work_dir:
        repository = Path(work_dir) / "model_repository"
        progress("exporting the model")
        export = export_model(DEFAULT_SPEC, repository, options)
        if naive:
            progress("writing the naive baseline beside it")
            source = classifier_source(DEFAULT_SPEC, export.written.classifier_onnx)
            write_naive_baseline(repository, DEFAULT_SPEC.name, source, options)
        progress("starting tritonserver")
        with temporary_server(repository, edge=edge(repository)) as server:
            yield _Served(server, export.written.classifier_onnx)
