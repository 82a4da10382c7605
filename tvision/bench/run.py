"""``tvision bench``: export into a temporary repository, serve it, run the chosen paths."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvision.bench.defaults import CONCURRENCIES, run_duration_s
from tvision.bench.images import bench_images
from tvision.bench.paths import BenchPaths, write_naive_baseline
from tvision.bench.report import NAIVE_COMPARISON_CONCURRENCY, PATHS, BenchReport, RunResult
from tvision.server import edge_limits_for, temporary_server

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
) -> BenchReport:
    """Run the chosen paths; ``overrides`` changes the exported ``ServingOptions``.

    Raises:
        ValueError: unknown paths, or a full run without the naive comparison's concurrency.
        ServerError: the server did not start with this export (``--set target=gpu``
            here: the embedded server has no onnxruntime backend).
    """
    from tvision_export.exporter import classifier_source, export_model
    from tvision_export.spec import DEFAULT_SPEC

    check_request(paths, concurrencies)
    duration = run_duration_s(quick, duration_s)
    options = bench_options(overrides)
    spec = DEFAULT_SPEC
    images = bench_images()
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="tvision-bench-") as work_dir:
        repository = Path(work_dir) / "model_repository"
        progress("exporting the model")
        export = export_model(spec, repository, options)
        if "naive" in paths:
            progress("writing the naive baseline beside it")
            source = classifier_source(spec, export.written.classifier_onnx)
            write_naive_baseline(repository, spec.name, source, options)
        progress("starting tritonserver")
        # Every caller comes from this machine's one address: the edge's per-client cap
        # (16 by default) would refuse the higher concurrencies' calls, not measure them.
        edge = edge_limits_for(repository, max_requests_per_client=max(concurrencies))
        with temporary_server(repository, edge=edge) as server:
            bench = BenchPaths(server, spec, options, images, duration)
            if "limit" in paths:
                progress("in-process limit")
                results.append(bench.limit(export.written.classifier_onnx))
            for concurrency in concurrencies:
                if "served" in paths:
                    progress(f"served ensemble, concurrency {concurrency}")
                    results.append(bench.served(concurrency, spec.name))
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
