"""``tvision tune``: the serving options that matter on a pod, searched for the most images
per second within a p99 objective, each configuration measured by NVIDIA's perf_analyzer
against a real server; the best is printed as ``tvision export`` flags.

The search is a coordinate descent from the exported defaults: each option in turn takes
each of its candidate values with the others at the best found so far, and keeps the value
that serves the most images per second within the objective (the lowest p99 while none
meets it), by at least ``min_gain`` (3%: smaller differences are this machine's noise). It
ends when every option has been tried once, or when ``budget_s`` is spent (the
configuration under way then finishes). Each configuration gets a repository of its own,
written from the one exported classifier, and a server of its own, killed afterwards.
The JSON report holds the search's parameters: ``tvision tune --from REPORT`` runs it again.

Triton Model Analyzer is not the measuring tool here: README, "Tuning", says why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tvision.bench.images import BenchImage

Progress = Callable[[str], None]
# The options that matter on a pod, in the order they are searched (the largest effect first,
# measured on 2 cores: README, "Performance").
OPTIONS = (
    "preprocess_instances",
    "classifier_instances",
    "intra_op_threads",
    "preferred_batch_sizes",
    "max_queue_delay_us",
)
# Values tried besides the exported default, which is always tried first.
BATCH_SIZES = ((4, 8), (8, 16), (2, 4))
QUEUE_DELAYS_US = (2000, 500, 5000)


def candidates(pod_cpus: int) -> dict[str, tuple[Any, ...]]:
    """Each option's values for a pod of ``pod_cpus`` cores, the exported default first."""
    from tvision_export.options import ServingOptions

    defaults = ServingOptions()
    values: dict[str, tuple[Any, ...]] = {
        "preprocess_instances": tuple(range(1, min(pod_cpus, 4) + 1)),
        "classifier_instances": tuple(range(1, min(pod_cpus, 2) + 1)),
        "intra_op_threads": tuple(range(1, min(pod_cpus, 2) + 1)),
        "preferred_batch_sizes": BATCH_SIZES,
        "max_queue_delay_us": QUEUE_DELAYS_US,
    }
    ordered = {}
    for name, tried in values.items():
        default = getattr(defaults, name)
        first = default if default in tried else tried[-1]  # a pod too small for it
        ordered[name] = (first, *(value for value in tried if value != first))
    return ordered


@dataclass(frozen=True)
class Search:
    """What a search measures; the JSON report keeps it, so the search can be run again."""

    pod_cpus: int
    p99_ms: float
    concurrency: int
    duration_s: float
    budget_s: float
    only: tuple[str, ...] = OPTIONS
    # A value replaces the best so far only when it is better by this fraction: runs on a
    # shared machine move by several percent (README, "Performance").
    min_gain: float = 0.03

    def __post_init__(self) -> None:
        machine = os.cpu_count() or 1
        if not 1 <= self.pod_cpus <= machine:
            raise ValueError(
                f"--pod-cpus {self.pod_cpus}: measured here, so between 1 and this machine's "
                f"{machine} cores"
            )
        unknown = sorted(set(self.only) - set(OPTIONS))
        if unknown:
            raise ValueError(f"--only: unknown options {unknown}; choose from {list(OPTIONS)}")
        if self.p99_ms <= 0 or self.concurrency < 1 or self.duration_s <= 0:
            raise ValueError("--p99-ms, --concurrency and --duration-s must be positive")
        if not 0 <= self.min_gain < 1:
            raise ValueError("--min-gain must be a fraction from 0 to 1")


@dataclass
class Trial:
    options: dict[str, Any]
    images_per_s: float
    p50_ms: float
    p99_ms: float
    meets: bool


@dataclass
class TuneReport:
    search: Search
    trials: list[Trial] = field(default_factory=list)
    planned: int = 0
    stopped_by_budget: bool = False
    best_trial: int = 0  # index into ``trials``

    @property
    def best(self) -> Trial:
        return self.trials[self.best_trial]

    def export_flags(self) -> str:
        """The best configuration as ``tvision export`` flags."""
        return " ".join(
            f"--{name.replace('_', '-')} {_flag_value(value)}"
            for name, value in self.best.options.items()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "best": asdict(self.best),
            "export_flags": self.export_flags(),
        }


def _better(challenger: Trial, incumbent: Trial, min_gain: float) -> bool:
    """Within the objective, more images per second; while neither meets it, a lower p99;
    by at least ``min_gain`` either way."""
    if challenger.meets != incumbent.meets:
        return challenger.meets
    if challenger.meets:
        return challenger.images_per_s > incumbent.images_per_s * (1 + min_gain)
    return challenger.p99_ms < incumbent.p99_ms * (1 - min_gain)


def _flag_value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


Measure = Callable[[dict[str, Any]], tuple[float, float, float]]


def coordinate_descent(
    search: Search, measure: Measure, progress: Progress = lambda _message: None
) -> TuneReport:
    """The search itself, with ``measure(options) -> (img/s, p50 ms, p99 ms)``."""
    space = candidates(search.pod_cpus)
    best = {name: values[0] for name, values in space.items()}
    plan = [(name, value) for name in search.only for value in space[name][1:]]
    report = TuneReport(search, planned=1 + len(plan))
    started = time.monotonic()

    def trial(options: dict[str, Any]) -> Trial:
        progress(f"configuration {len(report.trials) + 1}/{report.planned}: {options}")
        images_per_s, p50_ms, p99_ms = measure(options)
        result = Trial(dict(options), images_per_s, p50_ms, p99_ms, p99_ms <= search.p99_ms)
        report.trials.append(result)
        return result

    incumbent = trial(best)
    for name, value in plan:
        if time.monotonic() - started >= search.budget_s:
            report.stopped_by_budget = True
            break
        challenger = trial({**best, name: value})
        if _better(challenger, incumbent, search.min_gain):
            best, incumbent = dict(challenger.options), challenger
            report.best_trial = len(report.trials) - 1
    return report


def perf_analyzer_measure(work_dir: Path, images: Sequence[BenchImage], search: Search) -> Measure:
    """A ``Measure`` that serves each configuration from a repository of its own (removed
    afterwards) and runs perf_analyzer against it.

    Raises:
        PerfAnalyzerError: perf_analyzer is not installed.
    """
    import json

    from tvision.bench.perf_analyzer import (
        PerfAnalyzerTool,
        edge_limits,
        input_data,
        run_perf_analyzer,
    )
    from tvision.server import temporary_server
    from tvision_export.exporter import classifier_source, export_model
    from tvision_export.options import ServingOptions
    from tvision_export.repository import write_version
    from tvision_export.spec import DEFAULT_SPEC

    tool = PerfAnalyzerTool.installed()
    exported = export_model(DEFAULT_SPEC, work_dir / "exported", ServingOptions())
    source = classifier_source(DEFAULT_SPEC, exported.written.classifier_onnx)
    input_file = work_dir / "input-data.json"
    input_file.write_text(json.dumps(input_data(images)), encoding="utf-8")
    counter = iter(range(1, 10**6))

    def measure(options: dict[str, Any]) -> tuple[float, float, float]:
        repository = work_dir / f"configuration-{next(counter)}"
        write_version(repository, DEFAULT_SPEC.name, source, replace(ServingOptions(), **options))
        edge = edge_limits(repository, search.concurrency)
        try:
            with temporary_server(repository, edge=edge) as server:
                result = run_perf_analyzer(
                    tool, server, DEFAULT_SPEC.name, input_file, search.concurrency,
                    search.duration_s,
                )  # fmt: skip
        finally:
            shutil.rmtree(repository, ignore_errors=True)
        return result.images_per_s, result.p50_ms, result.p99_ms

    return measure


def tune(
    search: Search, images: Sequence[BenchImage], progress: Progress = lambda _message: None
) -> TuneReport:
    """Export once, then search (see the module docstring).

    Raises:
        PerfAnalyzerError: perf_analyzer is not installed, or it failed.
        ServerError: a configuration's server did not start.
    """
    with tempfile.TemporaryDirectory(prefix="tvision-tune-") as work_dir:
        progress("exporting the model once; each configuration is written from it")
        measure = perf_analyzer_measure(Path(work_dir), images, search)
        return coordinate_descent(search, measure, progress)


def render(report: TuneReport) -> str:
    """Every configuration tried, the best marked, then the best as export flags."""
    search = report.search
    names = list(report.trials[0].options)
    short = {"preprocess_instances": "pre", "classifier_instances": "cls",
             "intra_op_threads": "thr", "preferred_batch_sizes": "batches",
             "max_queue_delay_us": "delay us"}  # fmt: skip
    header = "".join(f"{short[name]:>10}" for name in names) + (
        f"{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}  objective"
    )
    lines = [
        f"tvision tune: pod of {search.pod_cpus} cores, p99 <= {search.p99_ms:g} ms at "
        f"concurrency {search.concurrency}, {search.duration_s:g} s per configuration "
        f"(perf_analyzer); a value is kept when {search.min_gain:.0%} better",
        header,
        "-" * len(header),
    ]
    best = report.best
    for trial in report.trials:
        cells = "".join(f"{_flag_value(trial.options[name]):>10}" for name in names)
        verdict = "meets" if trial.meets else "misses"
        lines.append(
            f"{cells}{trial.images_per_s:>9.1f}{trial.p50_ms:>9.1f}{trial.p99_ms:>9.1f}  "
            f"{verdict}{'  <- best' if trial is best else ''}"
        )
    if report.stopped_by_budget:
        lines.append(
            f"budget of {search.budget_s:g} s spent after {len(report.trials)} of "
            f"{report.planned} configurations"
        )
    if not best.meets:
        lines.append(f"no configuration met p99 <= {search.p99_ms:g} ms: the lowest p99 is shown")
    lines.append(f"export it: tvision export {report.export_flags()}")
    return "\n".join(lines)


def search_from_json(document: dict[str, Any]) -> Search:
    """The search a report ran, to run it again (``tvision tune --from``).

    Raises:
        ValueError: the document is not a ``tvision tune`` report.
    """
    try:
        fields = dict(document["search"])
        fields["only"] = tuple(fields["only"])
        return Search(**fields)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a tvision tune report: {exc}") from exc
