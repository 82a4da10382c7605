"""The Locust load test, run headless against the real server, bounded in time."""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tvision.loadtest_run import locust_command
from tvision.server import TritonServer
from tvision_loadtest import LOCUSTFILE, PACKAGE_DIR


def _locust(
    server: TritonServer, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    prefix = tmp_path / "run"
    completed = subprocess.run(
        locust_command(server.grpc_url, 4, 4, "3s", "--csv", str(prefix), *extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    with open(f"{prefix}_stats.csv", newline="") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    return completed.returncode, total, completed.stdout + completed.stderr


@pytest.mark.e2e
def test_headless_run_makes_requests_without_failures(triton_server, tmp_path) -> None:
    code, total, output = _locust(triton_server, tmp_path, "--slo-max-failure-ratio", "0")
    assert code == 0, output
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0
    assert "SLO gate passed" in output


@pytest.mark.e2e
def test_p99_slo_from_the_environment_fails_the_run(triton_server, tmp_path) -> None:
    # 0.001 ms p99 is impossible, so the gate must fail the process, and say it was p99.
    code, total, output = _locust(triton_server, tmp_path, env={"TVISION_SLO_P99_MS": "0.001"})
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0  # it failed on latency, not on errors
    assert code == 1, output
    assert "SLO gate FAILED: p99 latency" in output
    assert re.search(r"p99 latency +<= 0\.001 ms +\d+ ms +MISSED", output), output


@pytest.mark.e2e
def test_a_tolerated_failure_ratio_passes_and_a_tighter_one_fails(triton_server, tmp_path):
    """Real failures: one of the four images is not an image at all."""
    from tvision_export.samples import sample_photo

    images = tmp_path / "mix"
    images.mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        (images / f"{name}.jpg").write_bytes(sample_photo(name).path.read_bytes())
    (images / "zz-broken.jpg").write_bytes(b"this is not an image")
    code, total, output = _locust(
        triton_server, tmp_path, "--images", str(images), "--slo-max-failure-ratio", "0.5"
    )
    assert int(total["Failure Count"]) > 0
    assert code == 0, output[-2000:]  # Locust alone would exit 1 on any failure
    assert "SLO gate passed" in output
    code, _total, output = _locust(
        triton_server, tmp_path, "--images", str(images), "--slo-max-failure-ratio", "0.05"
    )
    assert code == 1 and "SLO gate FAILED: failure ratio" in output
    assert re.search(r"failure ratio +<= 0\.05 +0\.\d+ \(\d+ of \d+\) +MISSED", output), output


@pytest.mark.e2e
def test_a_run_against_no_server_could_not_run(tmp_path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{sock.getsockname()[1]}"
    completed = subprocess.run(
        locust_command(nobody, 2, 2, "3s", "--timeout-s", "1"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output[-2000:]
    # Checked before the run (tests/loadtest/test_cli.py): no users, no verdict.
    assert f"error: --host {nobody}: " in output, output[-2000:]


def _ensemble_requests(server: TritonServer) -> int:
    """Requests the server's ensemble received (Triton 2.51 counts a failed one twice)."""
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    counted = {"nv_inference_request_success": 0.0, "nv_inference_request_failure": 0.0}
    for line in text.splitlines():
        family = line.split("{", 1)[0]
        if family in counted and 'model="efficientnet_lite0",' in line:
            counted[family] += float(line.rsplit(" ", 1)[1])
    return int(
        counted["nv_inference_request_success"] + counted["nv_inference_request_failure"] / 2
    )


@pytest.mark.e2e
def test_distributed_run_is_judged_once_by_the_master(triton_server, tmp_path) -> None:
    """Locust's own distributed mode on this machine: a master and two worker processes,
    with objectives, a baseline and a report. One verdict is given, the master's, over the
    requests of both workers (the server's own count), and it is the run's exit code: a
    p99 of 0.001 ms cannot be met, a failure ratio of 1% is."""
    baseline, report, prefix = (
        tmp_path / "baseline.json",
        tmp_path / "report.html",
        tmp_path / "run",
    )
    before = _ensemble_requests(triton_server)
    completed = subprocess.run(
        locust_command(triton_server.grpc_url, 4, 4, "6s", "--processes", "2",
                       "--slo-p99-ms", "0.001", "--slo-max-failure-ratio", "0.01",
                       "--save-baseline", str(baseline), "--report", str(report),
                       "--csv", str(prefix)),
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    served = _ensemble_requests(triton_server) - before
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output[-3000:]  # the master's verdict
    verdicts = [line for line in output.splitlines() if line.startswith("SLO gate")]
    assert verdicts == ["SLO gate FAILED: p99 latency"], output[-3000:]
    assert re.search(r"p99 latency +<= 0\.001 ms +\d+ ms +MISSED", output), output[-3000:]
    found = re.search(r"failure ratio +<= 0\.01 +0\.0000 \(0 of (\d+)\) +met", output)
    assert found, output[-3000:]
    judged = int(found.group(1))
    with open(f"{prefix}_stats.csv", newline="") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    assert judged == int(total["Request Count"]) > 0
    # Both workers' requests, not one worker's share: what the server received, less at
    # most one call per user cut off by the stop.
    assert served - 4 <= judged <= served, (judged, served)
    assert json.loads(baseline.read_text())["requests"] == judged
    assert "Release gate FAILED (exit 1)" in report.read_text()


@pytest.mark.e2e
def test_images_option_sends_the_given_files(triton_server, tmp_path) -> None:
    from tvision_export.samples import sample_photo

    images = tmp_path / "mine"
    images.mkdir()
    (images / "flower.jpg").write_bytes(sample_photo("flower").path.read_bytes())
    code, total, output = _locust(triton_server, tmp_path, "--images", str(images / "*.jpg"))
    assert code == 0, output
    # The bundled photos are about 40-65 kB; sklearn's flower.jpg is about 140 kB.
    assert float(total["Average Content Size"]) == (images / "flower.jpg").stat().st_size


def test_the_load_test_package_needs_only_the_sdk_locust_and_pillow(tmp_path) -> None:
    """Every module of the package imports only the standard library, the SDK, Locust (with
    gevent and gRPC, which it brings) and Pillow; checked in a fresh interpreter with the
    exporter, torch and the server package made unimportable (importing the locustfile also
    monkey-patches the process for gevent)."""
    allowed = {"grpc", "gevent", "locust", "PIL", "tvision_client", "tvision_loadtest",
               "tritonclient"}  # fmt: skip
    for module in PACKAGE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed, (module.name, name)
    project = (ROOT / "loadtest" / "pyproject.toml").read_text()
    dependencies = project.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert re.findall(r'"([a-z-]+)', dependencies) == ["tvision-client", "locust", "pillow"]
    script = f"""
import sys
for name in ("tvision_export", "torch", "onnx", "tvision"):
    sys.modules[name] = None
import runpy
locustfile = runpy.run_path({str(LOCUSTFILE)!r})
# What Locust runs: the concrete User classes in the locustfile's namespace.
print("users", sorted(k for k, v in locustfile.items() if getattr(v, "abstract", True) is False))
from tvision_loadtest import BUNDLED_IMAGES, images
print("bundled", len(images.load_images(BUNDLED_IMAGES.as_posix())))
print("mix", sorted(images.image_mix(BUNDLED_IMAGES.as_posix()).values())[0])
try:
    images.load_images({str(tmp_path / "*.jpg")!r})
except FileNotFoundError as exc:
    print("missing:", exc)
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "users ['ClassifyUser']" in completed.stdout
    assert "bundled 4" in completed.stdout
    assert "mix JPEG 640x480," in completed.stdout
    assert "missing: no images (.jpg, .jpeg, .png, .webp, .bmp) found at" in completed.stdout


def test_step_ramp_holds_each_level_then_stops() -> None:
    """In a fresh interpreter: importing locust monkey-patches the process for gevent."""
    script = """
import os, sys
os.environ.update(TVISION_RAMP_STEP_USERS="3", TVISION_RAMP_STEPS="2", TVISION_RAMP_HOLD_S="10")
from tvision_loadtest import shapes
ramp = shapes.StepRamp()
for elapsed_s in (0.0, 9.9, 10.0, 19.9, 20.0):
    ramp.get_run_time = lambda elapsed_s=elapsed_s: elapsed_s
    print(elapsed_s, ramp.tick())
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    ticks = dict(line.split(" ", 1) for line in completed.stdout.splitlines())
    assert ticks == {
        "0.0": "(3, 3.0)", "9.9": "(3, 3.0)", "10.0": "(6, 3.0)", "19.9": "(6, 3.0)", "20.0": "None"
    }  # fmt: skip


@pytest.mark.e2e
def test_make_loadtest_runs_the_tested_command(cpu_repository, tmp_path) -> None:
    """``make loadtest`` calls ``tvision.loadtest_run``, which builds ``locust_command``."""
    dry_run = subprocess.run(
        ["make", "-n", "loadtest", "VENV=.venv"], cwd=ROOT, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert "-m tvision.loadtest_run" in dry_run.stdout, dry_run.stdout + dry_run.stderr
    report = tmp_path / "loadtest.html"
    completed = subprocess.run(
        [sys.executable, "-m", "tvision.loadtest_run", "--repository", str(cpu_repository),
         "--users", "2", "--spawn-rate", "2", "--run-time", "4s", "--report", str(report),
         "--", "--slo-p99-ms", "5000"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "SLO gate passed" in output
    # The server's side is in the report: make loadtest passes the metrics endpoint.
    assert "efficientnet_lite0_classifier" in report.read_text()
