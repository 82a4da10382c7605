"""The in-cluster load test's rendered master and worker arguments, run as they are on
this machine: one master and as many workers as the worker Job runs, against the real
server. Remapped: the server's and the master's addresses (loopback, free port), the
report paths, and the size (4 users for 6 s instead of the manifest's minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.k8s.rendering import LOADTEST, render
from tvision.server import ServerPorts

pytestmark = pytest.mark.e2e


def _jobs() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in render(LOADTEST) if d["kind"] == "Job"}


def _args(job: dict[str, Any]) -> list[str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def _remap(args: list[str], values: dict[str, str]) -> list[str]:
    remapped = []
    for arg in args:
        name = arg.split("=", 1)[0]
        remapped.append(f"{name}={values[name]}" if name in values else arg)
    return remapped


def test_rendered_master_and_workers_run_a_judged_distributed_test(triton_server, tmp_path):
    jobs = _jobs()
    master, worker = jobs["tvision-loadtest-master"], jobs["tvision-loadtest-worker"]
    workers = worker["spec"]["parallelism"]
    master_args = _args(master)
    assert f"--expect-workers={workers}" in master_args
    assert master["spec"]["backoffLimit"] == 0  # the verdict is the Job's status, not retried
    assert master["spec"]["activeDeadlineSeconds"] <= 1800
    port = ServerPorts.free().grpc
    report, baseline = tmp_path / "report.html", tmp_path / "baseline.json"
    master_command = _remap(
        master_args,
        {
            "--host": triton_server.grpc_url,
            "--metrics-url": triton_server.metrics_url,
            "--report": str(report),
            "--save-baseline": str(baseline),
            "--master-bind-port": str(port),
            "--run-time": "6s",
            "--users": "4",
            "--spawn-rate": "4",
            "--expect-workers-max-wait": "60",
        },
    )
    worker_command = _remap(
        _args(worker), {"--master-host": "127.0.0.1", "--master-port": str(port)}
    )
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launch = [sys.executable, "-m", "tvision_loadtest.cli"]
    master_process = subprocess.Popen(
        [*launch, *master_command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment,
    )  # fmt: skip
    worker_processes = [
        subprocess.Popen(
            [*launch, *worker_command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        for _ in range(workers)
    ]
    try:
        output, _ = master_process.communicate(timeout=120)
        worker_outputs = [process.communicate(timeout=60)[0] for process in worker_processes]
    finally:
        for process in [master_process, *worker_processes]:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert master_process.returncode == 0, output[-3000:]
    assert output.count("SLO gate passed") == 1
    assert report.exists() and baseline.exists()
    for process, worker_output in zip(worker_processes, worker_outputs, strict=True):
        assert process.returncode == 0, worker_output[-2000:]
        assert "SLO gate" not in worker_output  # only the master judges
