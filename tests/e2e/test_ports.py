"""A port already in use is refused before anything starts, naming the port and who holds
it (a second server would otherwise print "ready" from the first one's answer, then die)."""

from __future__ import annotations

import os
import socket

import psutil
import pytest

from tests.helpers import run_tvision
from tvision.server import ServerError, ServerPorts, TritonServer


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_taken_port_is_refused_naming_its_holder(tmp_path) -> None:
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        free = ServerPorts.free()
        server = TritonServer(
            tmp_path, ServerPorts(grpc=free.grpc, http=port, metrics=free.metrics)
        )
        with pytest.raises(ServerError) as raised:
            server.start()
    message = str(raised.value)
    assert f"HTTP port {port} on 127.0.0.1 is in use" in message
    assert f"(pid {os.getpid()})" in message
    assert server.process is None  # nothing was started
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children_before


def test_tvision_serve_exits_2_on_a_taken_port(cpu_repository) -> None:
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        completed = run_tvision(
            "serve", "--repository", str(cpu_repository), "--grpc-port", str(port),
            timeout_s=60,
        )  # fmt: skip
    assert completed.returncode == 2
    assert f"gRPC port {port} on 127.0.0.1 is in use" in completed.stderr
    assert "Traceback" not in completed.stderr
