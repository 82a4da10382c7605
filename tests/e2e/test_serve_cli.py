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


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_reports_its_ports_and_leaves_no_stub_behind(
    cpu_repository, tmp_path, stop_signal
) -> None:
    # A private copy: the session's shared server runs on cpu_repository itself.
    repository = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, repository)
    ports = ServerPorts.free()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tvision.cli",
            "serve",
            "--repository",
            str(repository),
            "--grpc-port",
            str(ports.grpc),
            "--http-port",
            str(ports.http),
            "--metrics-port",
            str(ports.metrics),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        assert serve.stderr is not None
        for line in serve.stderr:
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        assert f"127.0.0.1:{ports.grpc}" in lines[-1]
        # The server and its python-backend stubs are running now.
        assert len(_processes_serving(repository)) >= 2
        serve.send_signal(stop_signal)
        assert serve.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while _processes_serving(repository) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_serving(repository) == []
    finally:
        if serve.poll() is None:
            serve.kill()
