"""``tvision validate``: served ensemble vs in-process PyTorch on the bundled photos."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_tvision
from tvision.server import TritonServer

pytestmark = pytest.mark.e2e


def _validate(
    server: TritonServer, repository: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_tvision(
        "validate",
        "--repository",
        str(repository),
        "--url",
        server.grpc_url,
        *extra,
        timeout_s=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_validate_passes_with_full_top1_agreement(triton_server, cpu_repository) -> None:
    completed = _validate(triton_server, cpu_repository)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "PASS: top-1 agreement 100.0%" in completed.stdout
    assert completed.stdout.count("\n") >= 7  # a row per sample photo, then the verdict


def test_validate_fails_on_a_tight_threshold(triton_server, cpu_repository) -> None:
    # JPEG decoding differences exist but are tiny; a zero tolerance must fail the run.
    completed = _validate(triton_server, cpu_repository, "--max-probability-diff", "0")
    assert completed.returncode == 1
    assert "FAIL" in completed.stdout


def test_validate_catches_preprocessing_skew(triton_server, cpu_repository) -> None:
    completed = _validate(
        triton_server,
        cpu_repository,
        "--spec",
        "tests.e2e.skewed_spec:SKEWED",
        "--model",
        "efficientnet_lite0",
    )
    assert completed.returncode == 1
    assert "config skew: preprocessing mean" in completed.stdout


def test_validate_names_a_missing_image_directory(triton_server, cpu_repository) -> None:
    completed = _validate(triton_server, cpu_repository, "--images", "/nonexistent/photos")
    assert completed.returncode == 2
    assert "does not exist" in completed.stderr
