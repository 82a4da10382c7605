"""``tvision-loadtest``'s own command line: its help, and a run that cannot work ending
before any load is sent (issue 20, points 7, 8 and 12)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tvision import loadtest_run
from tvision.edge import EdgeLimits
from tvision.loadtest_run import locust_command
from tvision.server import TritonServer

# Each option, its default as the help prints it, and its environment variable.
OPTIONS = [
    ("--model", "efficientnet_lite0", "TVISION_MODEL"),
    ("--top-k", "5", "TVISION_TOP_K"),
    ("--timeout-s", "10.0", "TVISION_TIMEOUT_S"),
    ("--images", "the four photos in the package", "TVISION_IMAGES"),
    ("--slo-p50-ms", "0.0", "TVISION_SLO_P50_MS"),
    ("--slo-p95-ms", "0.0", "TVISION_SLO_P95_MS"),
    ("--slo-p99-ms", "0.0", "TVISION_SLO_P99_MS"),
    ("--slo-max-failure-ratio", "0.0", "TVISION_SLO_MAX_FAILURE_RATIO"),
    ("--slo-min-throughput", "0.0", "TVISION_SLO_MIN_THROUGHPUT"),
    ("--baseline", "none", "TVISION_BASELINE"),
    ("--max-throughput-drop", "0.1", "TVISION_MAX_THROUGHPUT_DROP"),
    ("--max-p99-rise", "0.2", "TVISION_MAX_P99_RISE"),
    ("--save-baseline", "none", "TVISION_SAVE_BASELINE"),
    ("--report", "none", "TVISION_REPORT"),
    ("--metrics-url", "none", "TVISION_METRICS_URL"),
]
# A bad run must end well within this; it is given -t 60s, and the check before the run
# takes about 2 s here (a dead host's answer is waited for at most 5 s).
FAIL_FAST_S = 30.0


def _script() -> str:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).with_name("tvision-loadtest")
    return str(script) if script.exists() else "tvision-loadtest"


def test_help_lists_every_tvision_option_with_its_default_and_variable() -> None:
    completed = subprocess.run(
        [_script(), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    # Ours come first, before Locust's own (long) options.
    ours, _, locusts = completed.stdout.partition("Locust's own options follow.")
    assert "--users" in locusts and "--headless" in locusts, completed.stdout[-2000:]
    # argparse wraps help text: each option's entry is its line (two spaces, the flag) and
    # the more deeply indented lines after it, read joined.
    entries: dict[str, str] = {}
    flag = ""
    for line in ours.splitlines():
        found = re.match(r"  (--[a-z0-9-]+)", line)
        if found:
            flag = found.group(1)
            entries[flag] = line[found.end() :]
        elif flag and line.startswith("   "):
            entries[flag] += line
        else:
            flag = ""
    entries = {name: " ".join(text.split()) for name, text in entries.items()}
    for flag, default, env in OPTIONS:
        assert flag in entries, (flag, ours)
        assert f"(default: {default}; env {env})" in entries[flag], (flag, entries[flag])
    assert "--ramp" in entries and "TVISION_RAMP_HOLD_S seconds (default 30)" in entries["--ramp"]


def _ensemble_requests(server: TritonServer) -> float:
    """Requests, failed or not, that reached any model of the server."""
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("nv_inference_request_success{", "nv_inference_request_failure{"))
    )


def _bad_run(host: str, *extra: str) -> tuple[int, list[str], float]:
    started = time.monotonic()
    completed = subprocess.run(
        locust_command(host, 2, 2, "60s", *extra),
        capture_output=True, text=True, timeout=FAIL_FAST_S + 30, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    elapsed_s = time.monotonic() - started
    output = completed.stdout + completed.stderr
    # Locust's own start banner is a log line; everything else said is the one error.
    lines = [line for line in output.splitlines() if "INFO/locust.main: Starting" not in line]
    return completed.returncode, lines, elapsed_s


def _assert_one_error(code: int, lines: list[str], elapsed_s: float, *named: str) -> str:
    assert code == 2, lines[-40:]  # EXIT_COULD_NOT_RUN
    assert len(lines) == 1 and lines[0].startswith("error: "), lines[-40:]
    for word in named:
        assert word in lines[0], lines[0]
    assert elapsed_s < FAIL_FAST_S, elapsed_s  # not the whole -t 60s
    return lines[0]


@pytest.mark.e2e
def test_bad_images_end_at_once_in_one_line(triton_server) -> None:
    before = _ensemble_requests(triton_server)
    code, lines, elapsed_s = _bad_run(triton_server.grpc_url, "--images", "/nonexistent/*.jpg")
    _assert_one_error(code, lines, elapsed_s, "--images", "/nonexistent/*.jpg")
    assert _ensemble_requests(triton_server) == before  # no load was sent


@pytest.mark.e2e
def test_a_host_with_nothing_listening_ends_at_once_in_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{sock.getsockname()[1]}"
        code, lines, elapsed_s = _bad_run(nobody, "--timeout-s", "1")
    _assert_one_error(code, lines, elapsed_s, f"--host {nobody}")


@pytest.mark.e2e
def test_an_unknown_model_ends_at_once_in_one_line(triton_server) -> None:
    before = _ensemble_requests(triton_server)
    code, lines, elapsed_s = _bad_run(triton_server.grpc_url, "--model", "nosuch")
    line = _assert_one_error(code, lines, elapsed_s, "--model nosuch")
    assert "could not read the model config" not in line
    assert _ensemble_requests(triton_server) == before


@pytest.mark.e2e
def test_a_missing_baseline_ends_at_once_in_one_line(triton_server, tmp_path) -> None:
    missing = tmp_path / "baseline.json"
    code, lines, elapsed_s = _bad_run(triton_server.grpc_url, "--baseline", str(missing))
    _assert_one_error(code, lines, elapsed_s, "--baseline", "does not exist")


def test_the_model_config_note_only_when_a_baseline_is_asked_for(tmp_path) -> None:
    """The digest is read for a baseline: without --baseline or --save-baseline, failing to
    read it is not worth a line. In a fresh interpreter (Locust patches it for gevent)."""
    script = """
import sys, types
from tvision_loadtest import recording
for baseline, save in (("", ""), ("", "saved.json"), ("old.json", "")):
    options = types.SimpleNamespace(metrics_url="", model="nosuch", baseline=baseline,
                                    save_baseline=save)
    environment = types.SimpleNamespace(runner=None, parsed_options=options,
                                        host=sys.argv[1],
                                        stats=types.SimpleNamespace(total=None))
    print("run", bool(baseline), bool(save), file=sys.stderr, flush=True)
    recording.on_test_start(environment)
"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{sock.getsockname()[1]}"
        completed = subprocess.run(
            [sys.executable, "-c", script, nobody],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    said = completed.stderr.split("run ")[1:]
    assert [part.split("\n", 1)[0] for part in said] == [
        "False False", "False True", "True False"
    ], completed.stderr  # fmt: skip
    notes = ["could not read the model config" in part for part in said]
    assert notes == [False, True, True], completed.stderr


def test_make_loadtest_gives_each_run_a_report_of_its_own(tmp_path, monkeypatch) -> None:
    """The release recipe's two ``make loadtest`` runs: the second does not overwrite the
    first's report, even within the same second. A fake server and a fake Locust run: what
    is checked is the report's name and the edge's cap, not a run."""

    class FakeServer:
        grpc_url, metrics_url = "127.0.0.1:1", "http://127.0.0.1:2/metrics"

    @contextlib.contextmanager
    def fake_server(*_args: object, edge: EdgeLimits) -> Iterator[FakeServer]:
        # All users run on this machine: the edge must admit them all from one address.
        caps.append(edge.max_requests_per_client)
        yield FakeServer()

    reports: list[str] = []
    caps: list[int] = []

    def run(command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        report = Path(command[command.index("--report") + 1])
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("a run's report")
        reports.append(str(report))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loadtest_run, "temporary_server", fake_server)
    monkeypatch.setattr(loadtest_run.subprocess, "run", run)
    for _ in range(2):
        assert loadtest_run.main(["--repository", "repo", "--", "--slo-p99-ms", "2000"]) == 0
    assert len(set(reports)) == 2, reports
    assert caps == [32, 32]  # twice the 16 users, the default
    for report in reports:
        assert re.fullmatch(r"bench-results/loadtest-\d{8}-\d{6}(-2)?\.html", report), report
    assert all((tmp_path / report).exists() for report in reports)


def _release_gate_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Load test: a release gate", 1)[1].split("\n## ", 1)[0]
    return section


def test_the_readmes_two_run_recipes_keep_both_reports() -> None:
    """The hand-run recipe names a report per run; the make recipe says where each goes."""
    section = _release_gate_block()
    recipe = section.split("**How a release owner gates a release:**", 1)[1].split("```")[1]
    runs = recipe.split("tvision-loadtest ")[1:]
    assert len(runs) == 2, recipe
    reports = [re.search(r"--report (\S+)", run).group(1) for run in runs]  # type: ignore[union-attr]
    assert len(set(reports)) == 2, reports
    assert "bench-results/loadtest-YYYYMMDD-HHMMSS.html" in section
