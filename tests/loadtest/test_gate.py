"""The release gate's judgement, in-process: each objective named with its threshold and
measured value, the exit codes, and regressions against a baseline."""

from __future__ import annotations

import json

import pytest

from tvision_loadtest import gate

RUN = gate.RunSummary(
    requests=1000, failures=2, throughput_rps=80.0, p50_ms=40.0, p95_ms=90.0, p99_ms=120.0,
    duration_s=12.5, images={"coffee.jpg": "JPEG 640x480, 63 kB"}, server_config="abc123",
)  # fmt: skip


def _check(verdict: gate.Verdict, name: str) -> gate.Check:
    (found,) = [check for check in verdict.checks if check.name == name]
    return found


def test_every_objective_is_named_with_threshold_and_measured_value() -> None:
    objectives = gate.Objectives(
        p50_ms=50, p95_ms=80, p99_ms=200, max_failure_ratio=0.01, min_throughput_rps=100
    )
    verdict = gate.judge(RUN, objectives)
    assert verdict.exit_code == gate.EXIT_SLO_MISSED
    assert [c.name for c in verdict.checks] == [
        "p50 latency", "p95 latency", "p99 latency", "failure ratio", "throughput",
    ]  # fmt: skip
    assert _check(verdict, "p95 latency") == gate.Check("p95 latency", "<= 80 ms", "90 ms", False)
    assert _check(verdict, "throughput").met is False
    assert _check(verdict, "throughput").measured == "80.0 req/s"
    assert _check(verdict, "failure ratio").measured == "0.0020 (2 of 1000)"
    lines = verdict.lines()
    assert lines[0] == "SLO gate FAILED: p95 latency, throughput"
    assert any("p50 latency" in line and line.endswith("met") for line in lines)


def test_objectives_left_at_zero_are_not_judged_and_a_clean_run_passes() -> None:
    verdict = gate.judge(RUN, gate.Objectives(max_failure_ratio=0.01))
    assert [c.name for c in verdict.checks] == ["failure ratio"]
    assert verdict.exit_code == gate.EXIT_PASSED and verdict.lines()[0] == "SLO gate passed"


def test_a_run_with_no_success_could_not_run() -> None:
    nothing = gate.RunSummary(10, 10, 0.0, 0.0, 0.0, 0.0, 3.0)
    verdict = gate.judge(nothing, gate.Objectives(max_failure_ratio=1.0))
    assert verdict.exit_code == gate.EXIT_COULD_NOT_RUN
    assert verdict.lines()[0].startswith("SLO gate COULD NOT RUN: 10 requests, none succeeded")


def test_a_run_against_itself_as_baseline_passes(tmp_path) -> None:
    path = tmp_path / "baseline.json"
    gate.save_baseline(RUN, path)
    saved = json.loads(path.read_text())
    assert saved["throughput_rps"] == 80.0 and saved["images"] == RUN.images
    assert saved["failure_ratio"] == pytest.approx(0.002)
    verdict = gate.judge(
        RUN, gate.Objectives(max_failure_ratio=0.01, baseline=gate.load_baseline(path))
    )
    assert verdict.exit_code == gate.EXIT_PASSED
    assert _check(verdict, "throughput vs baseline").measured.startswith("+0.0%")


def test_regressions_beyond_the_tolerances_fail_and_are_named() -> None:
    slower = gate.RunSummary(
        requests=800, failures=0, throughput_rps=70.0, p50_ms=45.0, p95_ms=100.0, p99_ms=150.0,
        duration_s=12.5, server_config="def456",
    )  # fmt: skip
    objectives = gate.Objectives(baseline=RUN, max_throughput_drop=0.10, max_p99_rise=0.20)
    verdict = gate.judge(slower, objectives)
    assert verdict.exit_code == gate.EXIT_SLO_MISSED
    throughput = _check(verdict, "throughput vs baseline")
    assert not throughput.met and throughput.measured.startswith("-12.5% (70.0 vs 80.0 req/s)")
    p99 = _check(verdict, "p99 vs baseline")
    assert not p99.met and p99.measured.startswith("+25.0% (150 vs 120 ms)")
    # A changed server configuration is said, not judged.
    assert _check(verdict, "server config").met
    within = gate.Objectives(baseline=RUN, max_throughput_drop=0.15, max_p99_rise=0.30)
    assert gate.judge(slower, within).exit_code == gate.EXIT_PASSED


@pytest.mark.parametrize(("content", "message"), [(None, "does not exist"), ("{}", "format")])
def test_a_bad_baseline_file_is_named(tmp_path, content, message) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        gate.load_baseline(path)
