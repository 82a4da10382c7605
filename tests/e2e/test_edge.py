"""The edge (nginx in front of Triton, tvision/edge.py) on the real server: a body over the
limit is refused before Triton reads it, slow and idle connections are closed, and health
stays answerable while a client holds the edge's connections.

Bounds here are a timeout the test sets plus a stated margin; nothing compares two timings.
"""

from __future__ import annotations

import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tvision.edge import EdgeLimits, render_config
from tvision.health import HealthEndpoint
from tvision.server import TritonServer, free_ports, temporary_server
from tvision_client import Client
from tvision_export import contract
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e

COFFEE = sample_photo("coffee").path.read_bytes()
# Short timeouts and a small connection budget, so that the test sees them act. The 50
# stalled bodies from 127.0.0.1 are the timeouts' to close, not the per-client cap's to
# refuse (tests/e2e/test_per_client_limit.py): the cap is the port's here.
TIGHT = EdgeLimits(
    client_timeout_s=2, idle_timeout_s=3, max_client_connections=64, max_requests_per_client=64
)
MARGIN_S = 5.0  # for a loaded 2-core machine; the timeouts themselves are 2-3 s


@pytest.fixture(scope="module")
def tight_server(cpu_repository: Path) -> Iterator[TritonServer]:
    # exit_timeout_s: the connections these tests leave half-open must not hold its stop.
    with temporary_server(cpu_repository, edge=TIGHT, exit_timeout_s=5) as server:
        yield server


def _ensemble_requests(server: TritonServer) -> float:
    """Requests that reached the ensemble (Triton counts each failure twice; any count
    that moves is enough here)."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("nv_inference_request_success{", "nv_inference_request_failure{"))
        and f'model="{DEFAULT_SPEC.name}",' in line
    )


def _oversized_request(size_bytes: int) -> service_pb2.ModelInferRequest:
    body = b"\xff\xd8" + bytes(size_bytes)
    request = service_pb2.ModelInferRequest(model_name=DEFAULT_SPEC.name)
    tensor = request.inputs.add(name=contract.ENSEMBLE_INPUT, datatype="BYTES")
    tensor.shape.extend([1, 1])
    request.raw_input_contents.append(struct.pack("<I", len(body)) + body)
    return request


def test_the_body_limit_admits_one_image_at_the_models_byte_limit(triton_server) -> None:
    from tvision_export.options import ServingOptions

    limit = triton_server.edge_limits
    assert limit is not None
    image_limit = ServingOptions().max_image_bytes
    assert image_limit < limit.max_request_bytes <= image_limit + 2 * 1024 * 1024


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_body_over_the_limit_is_refused_before_triton_reads_it(triton_server, protocol) -> None:
    assert triton_server.edge_limits is not None
    size = triton_server.edge_limits.max_request_bytes + 8 * 1024 * 1024
    before = _ensemble_requests(triton_server)
    if protocol == "grpc":
        options = [("grpc.max_send_message_length", 2 * size)]
        with grpc.insecure_channel(triton_server.grpc_url, options=options) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.ModelInfer(_oversized_request(size), timeout=60)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        message = raised.value.details()
    else:
        request = urllib.request.Request(
            f"{triton_server.http_url}/v2/models/{DEFAULT_SPEC.name}/infer",
            data=bytes(size), method="POST",
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as raised_http:
            urllib.request.urlopen(request, timeout=60)
        assert raised_http.value.code == 413
        message = raised_http.value.read().decode()
    assert f"limit of {triton_server.edge_limits.max_request_bytes} bytes" in message
    # Triton never saw it, and the next request is served.
    assert _ensemble_requests(triton_server) == before
    with Client(triton_server.grpc_url, timeout_s=60) as client:
        assert client.classify(COFFEE).top.label == "espresso"


def _closed(sock: socket.socket, deadline: float) -> bool:
    """True once the peer closes the socket (EOF or reset) before ``deadline``."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def test_slow_and_idle_connections_are_closed(tight_server) -> None:
    host, port = "127.0.0.1", tight_server.ports.http
    slow_headers, stalled_bodies, idle = [], [], []
    for _ in range(50):
        sock = socket.create_connection((host, port))
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")  # never finished
        slow_headers.append(sock)
        sock = socket.create_connection((host, port))
        sock.sendall(
            f"POST /v2/models/{DEFAULT_SPEC.name}/infer HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 100000\r\n\r\n{".encode()
        )
        stalled_bodies.append(sock)
        sock = socket.create_connection((host, port))
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in sock.recv(65536).split(b"\r\n", 1)[0] + b" "
        idle.append(sock)  # kept alive, then idle
    deadline = time.monotonic() + max(TIGHT.client_timeout_s, TIGHT.idle_timeout_s) + MARGIN_S
    for group in (slow_headers, stalled_bodies, idle):
        assert all(_closed(sock, deadline) for sock in group)
        for sock in group:
            sock.close()


def _closed_now(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_client_holding_more_connections_than_the_edge_holds_starves_nobody(
    cpu_repository,
) -> None:
    """One client opens more connections than the edge's worker can hold and sends nothing
    (a header timeout of 60 s here, so no timeout frees them). nginx closes the oldest idle
    ones to make room ("reusing connections"), so a new request is still served, and the
    launcher's health port (`tvision serve --health-port`, which asks Triton's own port)
    answers throughout. Without the edge, Triton holds every idle connection until its
    file descriptors run out (20,000 here), and its health endpoint with them."""
    crowded = EdgeLimits(client_timeout_s=60, idle_timeout_s=60, max_client_connections=64)
    worker_connections = 4 * crowded.max_client_connections + 1024
    (health_port,) = free_ports(1)
    with temporary_server(cpu_repository, edge=crowded) as server:
        health = HealthEndpoint(server, "127.0.0.1", health_port).start()
        held = []
        try:
            for _ in range(worker_connections + 200):
                held.append(socket.create_connection(("127.0.0.1", server.ports.http)))
            url = f"{server.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=MARGIN_S) as reply:
                assert reply.status == 200
            with urllib.request.urlopen(
                f"http://127.0.0.1:{health_port}/ready", timeout=5
            ) as reply:
                assert reply.status == 200
            assert sum(_closed_now(sock) for sock in held) >= 200  # the oldest idle went
        finally:
            for sock in held:
                sock.close()
            health.stop()
        with Client(server.grpc_url, timeout_s=60) as client:
            assert client.classify(COFFEE).top.label == "espresso"


def test_the_config_is_valid_nginx_for_every_shape(tmp_path) -> None:
    import subprocess

    from tvision.edge import EdgePorts, EdgeTLS, nginx_binary

    ports = EdgePorts(grpc=1, http=2, triton_grpc=3, triton_http=4)
    tls = EdgeTLS(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    for address, shape in (("127.0.0.1", None), ("::", tls)):
        text = render_config(
            EdgeLimits(), ports, address=address, work_dir=str(tmp_path), tls=shape
        )
        assert f"client_max_body_size {EdgeLimits().max_request_bytes};" in text
        config = tmp_path / "nginx.conf"
        config.write_text(text)
        if shape is not None:  # nginx -t reads the certificate files: make real ones
            import trustme

            authority = trustme.CA()
            issued = authority.issue_cert("localhost")
            issued.cert_chain_pems[0].write_to_path(tls.certificate)
            issued.private_key_pem.write_to_path(tls.private_key)
            authority.cert_pem.write_to_path(str(tls.client_ca))
        checked = subprocess.run(
            [nginx_binary(), "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(config)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        # Binding is not checked by -t; only the syntax and the files named.
        assert checked.returncode == 0, checked.stderr


def _advertised_stream_window(port: int) -> int:
    """The SETTINGS_INITIAL_WINDOW_SIZE the gRPC port's HTTP/2 server sends, read off the
    wire: the client preface and an empty SETTINGS frame, then the server's frames."""
    empty_settings = bytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0])  # length 0, SETTINGS, stream 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + empty_settings)
        received = b""
        while True:
            while len(received) < 9:
                received += sock.recv(65536) or pytest.fail("the edge closed the connection")
            length, kind, flags = int.from_bytes(received[:3], "big"), received[3], received[4]
            while len(received) < 9 + length:
                received += sock.recv(65536)
            payload, received = received[9 : 9 + length], received[9 + length :]
            if kind == 0x4 and not flags & 0x1:  # the server's SETTINGS, not an ACK
                entries = [payload[i : i + 6] for i in range(0, len(payload), 6)]
                settings = {
                    int.from_bytes(e[:2], "big"): int.from_bytes(e[2:], "big") for e in entries
                }
                return settings.get(0x4, 65535)  # absent: HTTP/2's default window


@pytest.mark.parametrize("window", [EdgeLimits().stream_window_bytes, 128 * 1024])
def test_the_grpc_port_offers_each_request_the_configured_window(window, tmp_path) -> None:
    """nginx's own default (64 KiB) costs a large image a round trip per 64 KiB; the edge
    advertises the window its limits set, read from the HTTP/2 handshake. No upstream is
    needed for the handshake, so the edge runs alone here."""
    from tvision.edge import Edge, EdgePorts
    from tvision.server import EXEC_WRAPPER

    assert EdgeLimits().stream_window_bytes >= 4 * 65536
    grpc_port, http_port, dead_grpc, dead_http = free_ports(4)
    ports = EdgePorts(grpc=grpc_port, http=http_port, triton_grpc=dead_grpc, triton_http=dead_http)
    edge = Edge(EdgeLimits(stream_window_bytes=window), ports, tmp_path / "edge")
    edge.start(EXEC_WRAPPER)
    try:
        assert _advertised_stream_window(grpc_port) == window
    finally:
        edge.stop()
