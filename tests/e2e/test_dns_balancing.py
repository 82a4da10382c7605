"""Balancing over a DNS name (README: `Client("dns:///tvision-triton-grpc.<namespace>.svc
.cluster.local:8001")`: "DNS returns every ready pod and the SDK balances per request").

A headless Service's name resolves to every ready pod. Here a small DNS server on
loopback answers one name with two addresses, 127.0.0.1 (the session's server) and
127.0.0.2 (a second server on the same port, like two pods), and the SDK is given that
name through gRPC's own DNS resolver (the ``dns://DNS-SERVER/name:port`` form of a
``dns:///`` target, so the test needs no change to the machine's resolver).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tvision.server import ServerPorts, TritonServer, temporary_server
from tvision_client import Client
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e

COFFEE = sample_photo("coffee").path.read_bytes()
NAME = "tvision-triton-grpc.tvision.svc.cluster.local"
ADDRESSES = ("127.0.0.1", "127.0.0.2")


def _answer(query: bytes) -> bytes:
    """A DNS reply: the two addresses for an A query of NAME, no records otherwise."""
    ident, _flags, qdcount = struct.unpack(">HHH", query[:6])
    end = 12
    labels = []
    while query[end]:
        labels.append(query[end + 1 : end + 1 + query[end]].decode())
        end += 1 + query[end]
    qtype = struct.unpack(">H", query[end + 1 : end + 3])[0]
    question = query[12 : end + 5]
    answers = []
    if ".".join(labels).lower() == NAME and qtype == 1:
        for address in ADDRESSES:
            answers.append(struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(address))
    header = struct.pack(">HHHHHH", ident, 0x8180, qdcount, len(answers), 0, 0)
    return header + question + b"".join(answers)


@pytest.fixture
def dns_server() -> Iterator[tuple[str, list[int]]]:
    """A UDP DNS server on a free loopback port; yields its address and the A queries
    it answered for NAME."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    answered: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            reply = _answer(query)
            answered.append(struct.unpack(">H", reply[6:8])[0])
            sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}", answered
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


def _served(server: TritonServer) -> int:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("nv_inference_request_success{")
            and f'model="{DEFAULT_SPEC.name}"' in line
        )
    )


def _served_since(before: list[int], servers: tuple[TritonServer, ...], expected: int) -> list[int]:
    """Each server's successes since ``before``, read until they add up to ``expected`` or
    10 s pass: Triton counts a request after its response has gone, so the last call's
    count can lag its answer by a moment on a busy machine."""
    deadline = time.monotonic() + 10
    while True:
        served = [_served(server) - start for server, start in zip(servers, before, strict=True)]
        if sum(served) >= expected or time.monotonic() > deadline:
            return served
        time.sleep(0.1)


def test_a_dns_target_reaches_the_server(triton_server) -> None:
    before = _served(triton_server)
    with Client(f"dns:///localhost:{triton_server.ports.grpc}", timeout_s=30) as client:
        for _ in range(3):
            assert client.classify(COFFEE).top.label == "espresso"
    assert _served_since([before], (triton_server,), expected=3) == [3]


def test_a_name_with_two_addresses_is_balanced_per_call(
    cpu_repository, triton_server, dns_server
) -> None:
    dns, answered = dns_server
    port = triton_server.ports.grpc
    free = ServerPorts.free()
    ports = ServerPorts(grpc=port, http=free.http, metrics=free.metrics)
    with temporary_server(cpu_repository, ports, address=ADDRESSES[1]) as second:
        before = [_served(server) for server in (triton_server, second)]
        with Client(f"dns://{dns}/{NAME}:{port}", timeout_s=30) as client:
            for _ in range(20):
                assert client.classify(COFFEE).top.label == "espresso"
        served = _served_since(before, (triton_server, second), expected=20)
    assert 2 in answered  # the SDK's channel asked this DNS server and got both addresses
    assert sum(served) == 20
    # round_robin alternates per call; 7 of 20 leaves room for a call or two sent before
    # the second subchannel connected.
    assert min(served) >= 7, f"calls were not balanced across the two addresses: {served}"
