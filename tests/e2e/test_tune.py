"""``tvision tune``: a real search on a tiny budget ends with a configuration that exports,
its report runs the same search again, and the search keeps what serves the most within
the objective (that last one with a fake measure, named so)."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.helpers import run_tvision
from tvision.cli import build_parser
from tvision.cli._options import serving_options_from
from tvision.tune import OPTIONS, Search, TuneReport, coordinate_descent, search_from_json
from tvision_export import configs, contract
from tvision_export.repository import ModelNames, write_version
from tvision_export.spec import DEFAULT_SPEC


@pytest.mark.e2e
def test_a_tiny_budget_measures_the_defaults_and_returns_an_exportable_configuration(
    default_source, tmp_path
) -> None:
    report_path = tmp_path / "tune.json"
    completed = run_tvision(
        "tune", "--budget-s", "0", "--duration-s", "1", "--concurrency", "4",
        "--json", str(report_path), timeout_s=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert len(report["trials"]) == 1 and report["stopped_by_budget"] is True
    assert report["planned"] > 1 and "budget of 0 s spent after 1 of" in completed.stdout
    trial = report["trials"][0]
    assert trial["images_per_s"] > 0 and trial["p99_ms"] >= trial["p50_ms"] > 0
    # The flags it prints are `tvision export` flags that give back the measured options.
    flags = report["export_flags"]
    assert f"tvision export {flags}" in completed.stdout
    args = build_parser().parse_args(["export", *shlex.split(flags)])
    options = serving_options_from(args)
    for name, value in trial["options"].items():
        measured = tuple(value) if isinstance(value, list) else value
        assert getattr(options, name) == measured, name
    written = write_version(tmp_path / "repository", DEFAULT_SPEC.name, default_source, options)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    config = configs.parse(
        (tmp_path / "repository" / names.preprocess / contract.CONFIG_FILE).read_text()
    )
    assert config.instance_group[0].count == trial["options"]["preprocess_instances"]
    assert written.version == 1
    # The report carries the search, so `tvision tune --from REPORT` runs the same one.
    assert search_from_json(report) == Search(
        pod_cpus=report["search"]["pod_cpus"], p99_ms=500.0, concurrency=4, duration_s=1.0,
        budget_s=0.0, only=OPTIONS, min_gain=0.03,
    )  # fmt: skip


def _search(**changes) -> Search:
    return Search(
        **{"pod_cpus": 2, "p99_ms": 100.0, "concurrency": 4, "duration_s": 1.0,
           "budget_s": 60.0, **changes}
    )  # fmt: skip


def test_the_search_keeps_the_fastest_value_within_the_objective_with_a_fake_measure() -> None:
    """A fake measure (no server): one classifier instance is fastest but misses the p99
    objective, so two stay; three preprocessing instances are fastest and meet it."""
    seen = []

    def fake_measure(options):
        seen.append(dict(options))
        images_per_s = 50.0 + 10 * options["preprocess_instances"]
        p99_ms = 80.0
        if options["classifier_instances"] == 1:
            images_per_s, p99_ms = 500.0, 150.0
        return images_per_s, 10.0, p99_ms

    report = coordinate_descent(
        _search(only=("preprocess_instances", "classifier_instances")), fake_measure
    )
    assert report.planned == len(seen) == 3  # defaults, 1 preprocessing instance, 1 classifier
    # Each option is tried on the best found so far: the slower single preprocessing
    # instance was not kept for the classifier's trial.
    assert seen[2] == {**seen[0], "classifier_instances": 1}
    assert report.best.options["preprocess_instances"] == 2  # the pod's 2 cores: 1 or 2
    assert report.best.options["classifier_instances"] == 2
    assert [trial.meets for trial in report.trials] == [True, True, False]
    assert "--classifier-instances 2" in report.export_flags()


def test_an_objective_no_configuration_meets_keeps_the_lowest_p99_with_a_fake_measure() -> None:
    """A fake measure (no server): every p99 is over the objective."""

    def fake_measure(options):
        return 100.0, 10.0, 300.0 - 50 * options["intra_op_threads"]

    report = coordinate_descent(_search(only=("intra_op_threads",)), fake_measure)
    assert not report.best.meets and report.best.options["intra_op_threads"] == 2
    assert isinstance(report, TuneReport) and not report.stopped_by_budget


def test_a_gain_within_the_noise_keeps_the_best_so_far_with_a_fake_measure() -> None:
    """A fake measure (no server): two threads serve 2% more, under the 3% margin."""

    def fake_measure(options):
        return 100.0 * (1.02 if options["intra_op_threads"] == 2 else 1.0), 10.0, 50.0

    report = coordinate_descent(_search(only=("intra_op_threads",)), fake_measure)
    assert report.best.options["intra_op_threads"] == 1 and len(report.trials) == 2
    wider = coordinate_descent(_search(only=("intra_op_threads",), min_gain=0.01), fake_measure)
    assert wider.best.options["intra_op_threads"] == 2


def test_a_pod_larger_than_this_machine_is_refused() -> None:
    with pytest.raises(ValueError, match="measured here, so between 1 and this machine's"):
        _search(pod_cpus=10_000)
    with pytest.raises(ValueError, match="unknown options"):
        _search(only=("max_batch_size",))
