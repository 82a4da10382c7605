"""An in-process FAKE KServe v2 gRPC server, for faults a real Triton cannot produce on demand.

Only the tests in ``test_faults_with_fake_server.py`` use it: a server that answers
UNAVAILABLE a set number of times, stalls past a deadline, or refuses every call. Every
other SDK behaviour is tested against the real Triton server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tvision_client._core import serialize_bytes_tensor
from tvision_export import contract


@dataclass
class FaultPlan:
    """What the fake does: fail the first ``fail_times`` infer calls with ``fail_code``,
    sleep ``stall_s`` in every infer call, and record the metadata it saw."""

    fail_times: int = 0
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    stall_s: float = 0.0
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
        if plan.stall_s:
            time.sleep(plan.stall_s)
        if call_number <= plan.fail_times:
            context.abort(plan.fail_code, f"injected fault {call_number}")
        response = service_pb2.ModelInferResponse(model_name=request.model_name)
        response.raw_output_contents.append(serialize_bytes_tensor([b"0.9:2:fake", b"0.1:0:a"]))
        return response


@contextmanager
def fake_server(plan: FaultPlan) -> Iterator[str]:
    """Serve the fake on a free loopback port; yields ``host:port``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeInferenceService(plan), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
