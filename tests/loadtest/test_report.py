"""Baselines and the HTML report, from real runs against real servers; the report is
rendered in headless Chromium (Debian's package, installed by `make test`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tvision.loadtest_run import locust_command
from tvision.server import TritonServer, temporary_server
from tvision_export.options import ServingOptions
from tvision_export.repository import write_version
from tvision_export.spec import DEFAULT_SPEC
from tvision_loadtest.gate import load_baseline
from tvision_loadtest.report import FAIL_COLOUR, PASS_COLOUR

pytestmark = pytest.mark.e2e


def _run(server: TritonServer, *extra: str) -> tuple[int, str]:
    completed = subprocess.run(
        locust_command(server.grpc_url, 2, 2, "4s", "--metrics-url", server.metrics_url, *extra),
        capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    return completed.returncode, completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def slow_server(default_source, fast_run, tmp_path_factory) -> Iterator[TritonServer]:
    """The same model, configured to wait for batches of 8 that two users never fill:
    every request waits the whole delay at both batched models. The delay is the fast
    run's own p99 (at least 60 ms), so the slow run's latency cannot fall below twice the
    baseline's p99, whatever else shares the machine: its p99 rises at least +100% (the
    gate allows +20%), and its throughput, at most two users over two delays, is at most
    half the baseline's (two users over a mean latency no longer than its p99)."""
    baseline = load_baseline(fast_run["baseline"])
    delay_us = max(60_000, round(baseline.p99_ms * 1000))
    repository = tmp_path_factory.mktemp("slow") / "model_repository"
    options = ServingOptions(
        target="cpu", max_queue_delay_us=delay_us, preferred_batch_sizes=(8,),
        queue_timeout_us=10 * delay_us,
    )  # fmt: skip
    write_version(repository, DEFAULT_SPEC.name, default_source, options)
    with temporary_server(repository) as server:
        yield server


@pytest.fixture(scope="module")
def fast_run(triton_server, tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("fast")
    paths = {"baseline": directory / "baseline.json", "report": directory / "report.html"}
    code, output = _run(
        triton_server, "--slo-max-failure-ratio", "0", "--save-baseline", str(paths["baseline"]),
        "--report", str(paths["report"]),
    )  # fmt: skip
    assert code == 0, output[-3000:]
    assert f"baseline saved: {paths['baseline']}" in output
    return paths


@pytest.fixture(scope="module")
def slow_run(slow_server, fast_run, tmp_path_factory) -> tuple[int, str, Path]:
    report = tmp_path_factory.mktemp("slow") / "report.html"
    code, output = _run(
        slow_server, "--baseline", str(fast_run["baseline"]), "--report", str(report)
    )
    return code, output, report


def test_a_run_against_a_faster_configurations_baseline_fails_and_names_it(slow_run) -> None:
    code, output, _report = slow_run
    assert code == 1, output[-3000:]
    assert "SLO gate FAILED: throughput vs baseline, p99 vs baseline" in output
    assert re.search(r"p99 vs baseline +<= \+20% +\+\d+\.\d% \(\d+ vs \d+ ms\) +MISSED", output)
    # The baseline carried the server's configuration digest, and it changed.
    assert re.search(r"server config +\(informational\) +changed: \w+ -> \w+", output)


def test_the_report_is_one_self_contained_page_with_the_servers_side(fast_run) -> None:
    page = fast_run["report"].read_text()
    assert "Release gate PASSED (exit 0)" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing fetched
    assert page.count("data:image/png;base64,") >= 3  # throughput, latency, server side
    for model in ("intake", "preprocess", "classifier"):
        assert f"efficientnet_lite0_{model}</td>" in page
    assert "coffee.jpg (JPEG 640x480" in page


def test_the_report_shows_the_runs_prediction_quality(fast_run) -> None:
    """From the classifier's prediction metrics. The session's server runs the default
    model exported without a quality reference: 1,000 labels, so every prediction is
    counted as "other" (README, "Watching predictions in production")."""
    page = fast_run["report"].read_text()
    assert "<h2>Prediction quality" in page
    found = re.search(r"<p>(\d+) predictions, (\d+) \((\d+\.\d)%\) of low confidence", page)
    assert found, page[-3000:]
    predictions, low = int(found.group(1)), int(found.group(2))
    # One image per request: the predictions are the ensemble's requests in the server table.
    row = r"<td>efficientnet_lite0 \(ensemble, end to end\)</td><td>(\d+)</td>"
    ensemble = re.search(row, page)
    assert ensemble and predictions == int(ensemble.group(1)) > 0
    assert 0 <= low <= predictions
    assert f"<td>other</td><td>{predictions}</td><td>100.0%</td>" in page
    assert page.count("data:image/png;base64,") >= 5  # and the two quality charts


def _chromium() -> str:
    """The browser's path. Missing, the test fails in CI (``CI=true``, where ``make test``
    installs Debian's chromium as root) and is skipped only elsewhere."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = (
        "Chromium is not installed and could not be (make test installs Debian's chromium as root)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; in CI the report must be rendered, not skipped")
    pytest.skip(f"{message}; the report's HTML is still checked above")


def _screenshot(page: Path, tmp_path: Path) -> Image.Image:
    shot = tmp_path / f"{page.parent.name}-{page.stem}.png"
    completed = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
         "--window-size=1000,700", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.exists(), completed.stderr[-2000:]
    return Image.open(shot).convert("RGB")


def _share_of(image: Image.Image, colour: tuple[int, int, int]) -> float:
    """The fraction of the top 250 pixel rows painted in ``colour``."""
    top = image.crop((0, 0, image.width, 250))
    counts = {rgb: count for count, rgb in top.getcolors(maxcolors=top.width * top.height)}
    return counts.get(colour, 0) / (top.width * top.height)


def test_chromium_shows_the_verdict_at_the_top(fast_run, slow_run, tmp_path) -> None:
    passed = _screenshot(fast_run["report"], tmp_path)
    failed = _screenshot(slow_run[2], tmp_path)
    # The verdict banner is a wide band of its colour across the top of the page (the
    # table's "met" words are green text, a tiny share).
    assert _share_of(passed, PASS_COLOUR) > 0.15 and _share_of(passed, FAIL_COLOUR) < 0.01
    assert _share_of(failed, FAIL_COLOUR) > 0.15 and _share_of(failed, PASS_COLOUR) < 0.01
