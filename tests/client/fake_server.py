"""An in-process FAKE KServe v2 gRPC server, for faults a real Triton cannot produce on demand.

Only the tests in ``test_faults_with_fake_server.py`` use it: a server that answers
UNAVAILABLE a set number of times, stalls every call by a set time (a slow replica),
never answers (a hung replica), or refuses every call; and ``BlackHoleProxy``, a
connection that goes silent without closing (a replica whose packets are dropped). Every
other SDK behaviour is tested against the real Triton server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tvision_client._core import serialize_bytes_tensor
from tvision_export import contract


@dataclass
class FaultPlan:
    """What the fake does: fail the first ``fail_times`` infer calls with ``fail_code``,
    sleep ``stall_s`` in every infer call, or with ``hang`` never answer one (until the
    client gives up), and record the infer calls and the metadata it saw."""

    fail_times: int = 0
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    stall_s: float = 0.0
    hang: bool = False
    infer_calls: int = 0
    seen_metadata: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeInferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def ModelMetadata(self, request, context):
        response = service_pb2.ModelMetadataResponse(name=request.name, versions=["1"])
        response.inputs.add(name=contract.ENSEMBLE_INPUT, datatype="BYTES", shape=[-1, 1])
        response.outputs.add(name=contract.ENSEMBLE_OUTPUT, datatype="FP32", shape=[-1, 3])
        return response

    def ModelConfig(self, request, context):
        response = service_pb2.ModelConfigResponse()
        response.config.name = request.name
        response.config.max_batch_size = 8
        return response

    def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=True)

    def ModelInfer(self, request, context):
        plan = self.plan
        with plan.lock:
            plan.infer_calls += 1
            call_number = plan.infer_calls
            plan.seen_metadata.append(dict(context.invocation_metadata()))
        if plan.hang:
            # Hold the call until the client's deadline cancels it; then the thread is free.
            given_up = threading.Event()
            context.add_callback(given_up.set)
            given_up.wait(timeout=60)
            return service_pb2.ModelInferResponse()
        if plan.stall_s:
            time.sleep(plan.stall_s)
        if call_number <= plan.fail_times:
            context.abort(plan.fail_code, f"injected fault {call_number}")
        response = service_pb2.ModelInferResponse(model_name=request.model_name)
        response.raw_output_contents.append(serialize_bytes_tensor([b"0.9:2:fake", b"0.1:0:a"]))
        return response


# The ping policy tvision's launcher gives Triton, so that the SDK's keepalive pings meet
# here what they meet in production (gRPC's default would close the connection).
SERVER_PING_POLICY = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.http2.max_ping_strikes", 0),
]


@contextmanager
def fake_server(plan: FaultPlan) -> Iterator[str]:
    """Serve the fake on a free loopback port; yields ``host:port``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=SERVER_PING_POLICY)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeInferenceService(plan), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


class BlackHoleProxy:
    """A TCP proxy whose open connections can go silent without closing.

    After ``black_hole()`` the connections open at that moment carry no byte either way,
    yet stay open, and the proxy's kernel still acknowledges what the client sends: as when
    a replica's packets are dropped, nothing tells the client, so only its keepalive pings
    can. Connections made afterwards carry bytes again (a new connection, as to a
    replacement pod). ``connections`` counts the connections accepted.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._silenced: list[threading.Event] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def black_hole(self) -> None:
        with self._lock:
            for silenced in self._silenced:
                silenced.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._upstream)
            silenced = threading.Event()
            with self._lock:
                self.connections += 1
                self._silenced.append(silenced)
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                args = (source, target, silenced)
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, silenced: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if not silenced.is_set():  # silenced: read (so the kernel acks) and drop
                    target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            _close(end)

    def close(self) -> None:
        _close(self._listener)
        with self._lock:
            for end in self._sockets:
                _close(end)

    def __enter__(self) -> BlackHoleProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close(end: socket.socket) -> None:
    """Close ``end``; shutting it down first wakes a thread blocked reading it."""
    with suppress(OSError):
        end.shutdown(socket.SHUT_RDWR)
    end.close()
