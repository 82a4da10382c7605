"""``tvision serve`` in the foreground: says where it listens, stops cleanly on signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tvision.server import ServerPorts

pytestmark = pytest.mark.e2e


def _processes_serving(repository: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(repository) in command and process.pid != os.getpid():
            found.append(process)
    return found


def _wait_until_gone(repository: Path, timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while _processes_serving(repository) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _processes_serving(repository)


def _start_serve(
    cpu_repository: Path, tmp_path: Path
) -> tuple[subprocess.Popen[str], Path, ServerPorts, str]:
    """``tvision serve`` on a private copy of the repository (the session's shared server
    runs on ``cpu_repository`` itself); returns once it printed its ``ready:`` line."""
    repository = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, repository)
    ports = ServerPorts.free()
    serve = subprocess.Popen(
        [sys.executable, "-m", "tvision.cli", "serve", "--repository", str(repository),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
         "--metrics-port", str(ports.metrics)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert serve.stderr is not None
    lines = []
    for line in serve.stderr:
        lines.append(line)
        if line.startswith("ready:"):
            break
    return serve, repository, ports, "".join(lines)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_reports_its_ports_and_leaves_no_stub_behind(
    cpu_repository, tmp_path, stop_signal
) -> None:
    serve, repository, ports, output = _start_serve(cpu_repository, tmp_path)
    try:
        assert f"ready: gRPC 127.0.0.1:{ports.grpc}" in output, output
        # The server and its python-backend stubs are running now.
        assert len(_processes_serving(repository)) >= 2
        serve.send_signal(stop_signal)
        assert serve.wait(timeout=60) == 0
        assert _wait_until_gone(repository, timeout_s=10) == []
    finally:
        if serve.poll() is None:  # a failed assertion: still stop the server gracefully
            serve.terminate()
            serve.wait(timeout=60)


def test_a_killed_launcher_takes_its_server_down(cpu_repository, tmp_path) -> None:
    """SIGKILL cannot be handled; the server still follows its launcher (PDEATHSIG)."""
    serve, repository, _ports, output = _start_serve(cpu_repository, tmp_path)
    assert "ready:" in output, output
    assert len(_processes_serving(repository)) >= 2
    serve.kill()
    serve.wait(timeout=30)
    assert _wait_until_gone(repository, timeout_s=40) == []
