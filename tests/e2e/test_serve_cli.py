"""``tvision serve`` in the foreground: says where it listens, stops cleanly on signals."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.helpers import http_status
from tvision.server import ADMIN_KEY_HEADER, ServerPorts, temporary_server
from tvision_client import Client, TLSConfig
from tvision_export.samples import sample_photo

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
    cpu_repository: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path, ServerPorts, str]:
    """``tvision serve`` on a private copy of the repository (the session's shared server
    runs on ``cpu_repository`` itself); returns once it printed its ``ready:`` line."""
    repository = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, repository)
    ports = ServerPorts.free()
    serve = subprocess.Popen(
        [sys.executable, "-m", "tvision.cli", "serve", "--repository", str(repository),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
         "--metrics-port", str(ports.metrics), *extra],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=None if env is None else {**os.environ, **env},
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
        # Closed by default: with no flag at all, model control answers 403.
        assert "admin APIs: closed" in output, output
        base = f"http://127.0.0.1:{ports.http}"
        assert http_status(base, "POST", "/v2/repository/index") == 403
        assert http_status(base, "GET", "/v2/models/efficientnet_lite0/config") == 200
        # The server and its python-backend stubs are running now.
        assert len(_processes_serving(repository)) >= 2
        serve.send_signal(stop_signal)
        assert serve.wait(timeout=60) == 0
        # Triton exits 0 only if nothing held it to its exit timeout: the edge had to let
        # go of its upstream connections (the HTTP requests above opened them) first.
        assert serve.stderr is not None
        assert "stopped (tritonserver exit code 0)" in serve.stderr.read()
        assert _wait_until_gone(repository, timeout_s=10) == []
    finally:
        if serve.poll() is None:  # a failed assertion: still stop the server gracefully
            serve.terminate()
            serve.wait(timeout=60)


def test_serve_reports_a_healed_stub_once_when_it_is_healed(cpu_repository, tmp_path) -> None:
    """A stub killed for real: serve says so once, after the reload finished (a heal is
    recorded when noticed, and its outcome is known only seconds later)."""
    import queue
    import threading

    serve, repository, _ports, output = _start_serve(cpu_repository, tmp_path)
    lines: queue.Queue[str] = queue.Queue()

    def read_the_rest() -> None:
        assert serve.stderr is not None
        for line in serve.stderr:
            lines.put(line)

    threading.Thread(target=read_the_rest, daemon=True).start()
    try:
        assert "ready:" in output, output
        stub = next(
            process for process in _processes_serving(repository)
            if (process.info["cmdline"] or [""])[0].endswith("triton_python_backend_stub")
        )  # fmt: skip
        stub.kill()
        deadline = time.monotonic() + 90
        reports = []
        while time.monotonic() < deadline and not reports:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=1)
                reports += [line] if line.startswith("a stub of") else []
        assert reports and "reloaded in" in reports[0], reports
        time.sleep(3)  # a second report of the same heal would come within the loop's 1 s
        later = [line for line in list(lines.queue) if line.startswith("a stub of")]
        assert later == []
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)


def test_a_killed_launcher_takes_its_server_down(cpu_repository, tmp_path) -> None:
    """SIGKILL cannot be handled; the server still follows its launcher (PDEATHSIG)."""
    serve, repository, _ports, output = _start_serve(cpu_repository, tmp_path)
    assert "ready:" in output, output
    assert len(_processes_serving(repository)) >= 2
    serve.kill()
    serve.wait(timeout=30)
    assert _wait_until_gone(repository, timeout_s=40) == []


def _http_status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_locked_down_restricts_admin_apis_and_serves_grpc_over_tls(
    cpu_repository, tmp_path
) -> None:
    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    admin_key = "serve-cli-admin-key-0123456789"
    serve, _repository, ports, output = _start_serve(
        cpu_repository, tmp_path,
        "--admin-key-env", "TVISION_TEST_ADMIN_KEY",
        "--grpc-tls-cert", str(cert), "--grpc-tls-key", str(key),
        env={"TVISION_TEST_ADMIN_KEY": admin_key},
    )  # fmt: skip
    try:
        assert "admin APIs: restricted" in output and "gRPC: TLS" in output, output
        assert admin_key not in output
        stats = f"http://127.0.0.1:{ports.http}/v2/models/stats"
        assert _http_status(stats, {}) == 403
        assert _http_status(stats, {ADMIN_KEY_HEADER: admin_key}) == 200
        tls = TLSConfig(root_certificates=authority.cert_pem.bytes())
        with Client(f"127.0.0.1:{ports.grpc}", tls=tls, timeout_s=60) as client:
            image = sample_photo("coffee").path.read_bytes()
            assert client.classify(image).top.label == "espresso"
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--admin-key-env", "TVISION_TEST_UNSET_KEY"], "at least 16 characters"),
        (["--grpc-tls-cert", "server.pem"], "go together"),
        (["--address", "0.0.0.0", "--open-admin-apis"], "refusing to serve 0.0.0.0"),
        (["--open-admin-apis", "--admin-key-env", "KEY"], "not allowed with argument"),
    ],
)
def test_serve_refuses_half_a_lockdown_with_a_clear_error(cpu_repository, extra, message) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tvision.cli", "serve", "--repository", str(cpu_repository),
         *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_watchdog_heals_a_locked_down_server(cpu_repository) -> None:
    """Healing reloads through the model-control API, which the key now guards."""
    key = "heal-key-0123456789"
    with temporary_server(cpu_repository, admin_key=key) as server:
        assert server.watchdog is not None
        (model, pids), *_ = sorted(server.watchdog.stubs().items())
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            server.watchdog.heals and server.watchdog.heals[0].recovered_s is not None
        ):
            time.sleep(0.2)
        (heal,) = server.watchdog.heals
        assert heal.model == model
        assert heal.error == "" and heal.recovered_s is not None
