"""``tvision bench-edge``: what the edge (nginx in front of Triton) costs, measured.

One server. First, throughput: the SDK at ``concurrency`` callers on the bench mix through
the edge, and straight to Triton's own loopback port behind it, in alternating rounds, so
drift on a shared machine hits both alike. Then one large image across a slow link (a
delaying relay: each round trip ``delay_s`` longer) straight to Triton, through an edge
with nginx's default HTTP/2 window (64 KiB), and through the edge as configured
(``EdgeLimits.stream_window_bytes``). Figures side by side, as ratios of the same run.
"""

from __future__ import annotations

import io
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tvision.bench.defaults import (
    EDGE_CALLS,
    EDGE_CONCURRENCY,
    EDGE_DELAY_S,
    EDGE_DURATION_S,
    EDGE_ROUNDS,
    TOP_K,
)
from tvision.bench.images import BenchImage, bench_images
from tvision.bench.load import LoadResult
from tvision.bench.relay import RELAY_SCRIPT
from tvision.bench.rounds import (
    ClientRate,
    RoundsRun,
    alternating_rounds,
    client_rate,
    rate_lines,
    rates_json,
    ratio_line,
)
from tvision.edge import Edge, EdgeLimits, EdgePorts
from tvision.server import EXEC_WRAPPER, TritonServer, free_ports, temporary_server
from tvision.server.repository import edge_limits_for

# nginx's own http2_body_preread_size, the window the edge had before it set one.
NGINX_DEFAULT_WINDOW = 64 * 1024
# The edge may cost at most this much throughput against Triton's own port.
EDGE_TARGET = 0.95


@dataclass
class EdgeReport(RoundsRun):
    throughput: dict[str, ClientRate]
    delay_s: float
    large_image_bytes: int
    # Median seconds of one call across the slow link, by path.
    large_image_s: dict[str, float]

    @property
    def edge_over_direct(self) -> float:
        return self.throughput["edge"].images_per_s / self.throughput["direct"].images_per_s

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "throughput": rates_json(self.throughput),
            "edge_over_direct": self.edge_over_direct,
            "target": EDGE_TARGET,
            "delay_s": self.delay_s,
            "large_image_bytes": self.large_image_bytes,
            "large_image_s": self.large_image_s,
        }


def run_edge_benchmark(
    concurrency: int = EDGE_CONCURRENCY,
    rounds: int = EDGE_ROUNDS,
    duration_s: float = EDGE_DURATION_S,
    delay_s: float = EDGE_DELAY_S,
    calls: int = EDGE_CALLS,
    repository: Path | None = None,
    progress: Callable[[str], None] = lambda _message: None,
) -> EdgeReport:
    """Serve ``repository`` (or a fresh export of the default model) and measure."""
    from tvision_export.exporter import export_model
    from tvision_export.options import ServingOptions
    from tvision_export.spec import DEFAULT_SPEC

    with tempfile.TemporaryDirectory(prefix="tvision-bench-edge-") as work_dir:
        if repository is None:
            repository = Path(work_dir) / "model_repository"
            progress("exporting the model")
            export_model(DEFAULT_SPEC, repository, ServingOptions())
        progress("starting tritonserver behind the edge")
        # The callers share one address: the per-client cap must admit them all.
        cap = max(EdgeLimits().max_requests_per_client, 2 * concurrency)
        edge = edge_limits_for(repository, max_requests_per_client=cap)
        with temporary_server(repository, edge=edge) as server:
            loads = _throughput(server, concurrency, rounds, duration_s, progress)
            large = _large_image()
            progress(f"one {len(large) / 1e6:.2f} MB image, {delay_s * 1000:.0f} ms away")
            slow = _across_a_slow_link(server, Path(work_dir), large, delay_s, calls)
    return EdgeReport(
        cpu_count=os.cpu_count(), concurrency=concurrency, rounds=rounds, duration_s=duration_s,
        throughput={name: client_rate(runs) for name, runs in loads.items()},
        delay_s=delay_s, large_image_bytes=len(large), large_image_s=slow,
    )  # fmt: skip


def _throughput(
    server: TritonServer, concurrency: int, rounds: int, duration_s: float,
    progress: Callable[[str], None],
) -> dict[str, list[LoadResult]]:  # fmt: skip
    """The SDK through the edge and straight to Triton's loopback port, alternating."""
    from tvision_client import Client

    direct_url = f"127.0.0.1:{server.triton_ports.grpc}"
    with (
        Client(server.grpc_url, timeout_s=120) as edge,
        Client(direct_url, timeout_s=120) as direct,
    ):

        def caller(client: Client) -> Callable[[BenchImage], int]:
            def call(image: BenchImage) -> int:
                client.classify(image.data, top_k=TOP_K)
                return len(image.data)

            return call

        calls = {"edge": caller(edge), "direct": caller(direct)}
        return alternating_rounds(calls, bench_images(), concurrency, rounds, duration_s, progress)


def _large_image() -> bytes:
    """A real photo at 2400x1600, JPEG quality 92: about 560 KB."""
    from PIL import Image

    from tvision_export.samples import sample_photo

    buffer = io.BytesIO()
    Image.open(sample_photo("coffee").path).resize((2400, 1600)).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _across_a_slow_link(
    server: TritonServer, work_dir: Path, image: bytes, delay_s: float, calls: int
) -> dict[str, float]:
    """Median seconds per call of ``image`` through a relay ``delay_s`` away from: Triton's
    own port, an edge with nginx's default window, and the server's own edge."""
    assert server.edge_limits is not None
    old_window = replace(server.edge_limits, stream_window_bytes=NGINX_DEFAULT_WINDOW)
    with _extra_edge(server, old_window, work_dir / "edge-64k") as old_edge_port:
        targets = {
            "direct": server.triton_ports.grpc,
            "edge, nginx's 64 KiB window": old_edge_port,
            f"edge, {server.edge_limits.stream_window_bytes // 1024} KiB window": server.ports.grpc,
        }
        seconds = {}
        for name, port in targets.items():
            with _relay(port, delay_s) as relay_port:
                seconds[name] = _median_call_s(relay_port, image, calls)
    return seconds


@contextmanager
def _extra_edge(server: TritonServer, limits: EdgeLimits, work_dir: Path) -> Iterator[int]:
    grpc_port, http_port = free_ports(2)
    ports = EdgePorts(grpc_port, http_port, server.triton_ports.grpc, server.triton_ports.http)
    edge = Edge(limits, ports, work_dir)
    edge.start(EXEC_WRAPPER)
    try:
        yield grpc_port
    finally:
        edge.stop()


@contextmanager
def _relay(port: int, delay_s: float) -> Iterator[int]:
    (listen,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-c", RELAY_SCRIPT, str(os.getpid()), str(listen), "127.0.0.1",
         str(port), str(delay_s)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield listen
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def infer_request(image: bytes) -> Any:
    """A well-formed gRPC request for the default ensemble, built by hand (no SDK, so no
    retries and no attempt timeout): one encoded image as a BYTES tensor."""
    from tritonclient.grpc import service_pb2

    from tvision_export import contract
    from tvision_export.spec import DEFAULT_SPEC

    request = service_pb2.ModelInferRequest(model_name=DEFAULT_SPEC.name)
    tensor = request.inputs.add(name=contract.ENSEMBLE_INPUT, datatype="BYTES")
    tensor.shape.extend([1, 1])
    request.raw_input_contents.append(struct.pack("<I", len(image)) + image)
    return request


def _median_call_s(port: int, image: bytes, calls: int) -> float:
    """One warm-up call on a fresh channel, then ``calls`` timed ones (raw gRPC: no SDK
    attempt timeout to cut a slow one short)."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    options = [("grpc.max_send_message_length", 64 * 2**20)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = infer_request(image)
        stub.ModelInfer(request, timeout=60)
        seconds = []
        for _ in range(calls):
            started = time.perf_counter()
            stub.ModelInfer(request, timeout=60)
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def render_edge_table(report: EdgeReport) -> str:
    lines = [
        f"the edge on {report.cpu_count} CPU cores: the SDK at concurrency {report.concurrency}, "
        f"{report.rounds} alternating rounds of {report.duration_s:g} s",
        *rate_lines(report.throughput, "path", 10),
        ratio_line("edge / direct throughput", report.edge_over_direct, EDGE_TARGET),
    ]
    lines.append(
        f"one {report.large_image_bytes / 1e6:.2f} MB image, {report.delay_s * 1000:.0f} ms away "
        "(median seconds per call, and per call straight to Triton):"
    )
    direct = report.large_image_s["direct"]
    for name, seconds in report.large_image_s.items():
        lines.append(f"  {name:<30}{seconds:>7.2f} s  {seconds / direct:>6.2f}x")
    return "\n".join(lines)
