"""The Locust load test, run headless against the real server, bounded in time."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from tvision.loadtest_run import locust_command
from tvision.server import TritonServer

pytestmark = pytest.mark.e2e


def _locust(server: TritonServer, tmp_path: Path, *extra: str) -> tuple[int, dict[str, str], str]:
    prefix = tmp_path / "run"
    completed = subprocess.run(
        locust_command(server.grpc_url, 4, 4, "8s", "--csv", str(prefix), *extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    with open(f"{prefix}_stats.csv", newline="") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    return completed.returncode, total, completed.stdout + completed.stderr


def test_headless_run_makes_requests_without_failures(triton_server, tmp_path) -> None:
    code, total, output = _locust(triton_server, tmp_path, "--slo-max-failure-ratio", "0")
    assert code == 0, output
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0
    assert "SLO gate passed" in output


def test_slo_gate_fails_the_run_when_latency_is_out_of_reach(triton_server, tmp_path) -> None:
    # 0.001 ms p99 is impossible, so the gate must fail the process.
    code, total, output = _locust(triton_server, tmp_path, "--slo-p99-ms", "0.001")
    assert int(total["Request Count"]) > 0
    assert code == 1, output
    assert "SLO gate FAILED" in output
