"""``tvision serve --health-port`` end to end, through the real CLI: the launcher's own
``GET /ready`` and ``GET /live`` on the health port (README: "`tvision serve --health-port
P` answers `GET /ready` with 503 from the death until the reload is done (Triton's own
`/v2/health/ready` stays 200), and `GET /live`"); and its ``--max-requests-per-client``
reaching the edge."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.test_serve_cli import _processes_serving, _start_serve
from tvision.server import free_ports

pytestmark = pytest.mark.e2e


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


CAP = 2  # --max-requests-per-client, far below the default


def _held_http_request(port: int) -> socket.socket:
    """An HTTP inference request whose headers announce a 1 MB body that never comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v2/models/efficientnet_lite0/infer HTTP/1.1\r\nHost: edge\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n{"
    )
    return sock


def _refused_beyond_the_cap(http_port: int) -> str:
    """Hold CAP requests from this address; the reply the next one gets at once."""
    held = [_held_http_request(http_port) for _ in range(CAP)]
    try:
        time.sleep(1.0)  # nginx has read their headers and counts them
        with _held_http_request(http_port) as extra:
            extra.settimeout(5)  # a held request would time out here instead
            return extra.recv(4096).decode(errors="replace")
    finally:
        for sock in held:
            sock.close()


def test_serve_answers_ready_and_live_on_its_health_port(cpu_repository, tmp_path) -> None:
    (health_port,) = free_ports(1)
    serve, repository, ports, output = _start_serve(
        cpu_repository, tmp_path, "--health-port", str(health_port),
        "--max-requests-per-client", str(CAP),
    )  # fmt: skip
    later: list[str] = []
    try:
        assert "ready:" in output, output
        assert serve.stderr is not None
        stderr = serve.stderr

        def read_the_rest() -> None:
            for line in stderr:
                later.append(line)

        threading.Thread(target=read_the_rest, daemon=True).start()
        expected = f"health: http://127.0.0.1:{health_port}/ready\n"
        deadline = time.monotonic() + 30  # printed right after the ready: block
        while expected not in later:
            assert time.monotonic() < deadline, later
            time.sleep(0.1)
        health = f"http://127.0.0.1:{health_port}"
        triton_ready = f"http://127.0.0.1:{ports.http}/v2/health/ready"
        assert _status(f"{health}/ready") == 200
        assert _status(f"{health}/live") == 200
        assert _status(f"{health}/metrics") == 404  # only the two paths
        # The flag reaches the edge: a third request from this address is refused at once.
        reply = _refused_beyond_the_cap(ports.http)
        assert reply.startswith("HTTP/1.1 503"), reply
        assert f"limit of {CAP} requests in progress from one client address" in reply
        # A stub killed for real: /ready says 503 until the reload is done, while Triton's
        # own readiness stays 200 and the launcher stays live.
        stub = next(
            process for process in _processes_serving(repository)
            if (process.info["cmdline"] or [""])[0].endswith("triton_python_backend_stub")
        )  # fmt: skip
        stub.kill()
        deadline = time.monotonic() + 30
        while _status(f"{health}/ready") != 503:
            assert time.monotonic() < deadline, "/ready never said 503 after a stub died"
            time.sleep(0.05)
        assert _status(f"{health}/live") == 200
        assert _status(triton_ready) == 200
        deadline = time.monotonic() + 90
        while _status(f"{health}/ready") != 200:
            assert time.monotonic() < deadline, "/ready stayed 503 after the heal"
            time.sleep(0.2)
        assert _status(f"{health}/live") == 200
    finally:
        serve.terminate()
        code = serve.wait(timeout=60)
    assert code == 0, later
    # The health endpoint went with the server.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", health_port), timeout=2).close()
