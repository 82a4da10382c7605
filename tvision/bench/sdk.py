"""``tvision bench-sdk``: the SDK's classify against tritonclient's infer, same server."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvision.bench.defaults import SDK_CONCURRENCY, SDK_DURATION_S, SDK_ROUNDS, TOP_K
from tvision.bench.images import BenchImage, bench_images
from tvision.bench.rounds import (
    ClientRate,
    RoundsRun,
    alternating_rounds,
    client_rate,
    rate_lines,
    rates_json,
    ratio_line,
)
from tvision.server import temporary_server

# The SDK may cost at most this much throughput against raw tritonclient.
SDK_TARGET = 0.97


@dataclass
class SdkReport(RoundsRun):
    results: dict[str, ClientRate]

    @property
    def sdk_over_tritonclient(self) -> float:
        return self.results["sdk"].images_per_s / self.results["tritonclient"].images_per_s

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "results": rates_json(self.results),
            "sdk_over_tritonclient": self.sdk_over_tritonclient,
            "target": SDK_TARGET,
        }


def run_sdk_benchmark(
    concurrency: int = SDK_CONCURRENCY,
    rounds: int = SDK_ROUNDS,
    duration_s: float = SDK_DURATION_S,
    progress: Callable[[str], None] = lambda _message: None,
) -> SdkReport:
    """Alternating rounds, so that drift on a shared machine hits both clients alike."""
    from tvision_client import Client
    from tvision_export.exporter import export_model
    from tvision_export.options import ServingOptions
    from tvision_export.spec import DEFAULT_SPEC

    images = bench_images()
    with tempfile.TemporaryDirectory(prefix="tvision-bench-sdk-") as work_dir:
        repository = Path(work_dir) / "model_repository"
        progress("exporting the model")
        export_model(DEFAULT_SPEC, repository, ServingOptions())
        progress("starting tritonserver")
        with (
            temporary_server(repository) as server,
            Client(server.grpc_url, timeout_s=120) as sdk,
        ):
            sdk.model_info()

            def sdk_call(image: BenchImage) -> int:
                sdk.classify(image.data, top_k=TOP_K)
                return len(image.data)

            calls = {"sdk": sdk_call, "tritonclient": _raw_caller(server.grpc_url)}
            loads = alternating_rounds(calls, images, concurrency, rounds, duration_s, progress)
    return SdkReport(
        cpu_count=os.cpu_count(),
        concurrency=concurrency,
        rounds=rounds,
        duration_s=duration_s,
        results={name: client_rate(rounds_run) for name, rounds_run in loads.items()},
    )


def _raw_caller(grpc_url: str) -> Callable[[BenchImage], int]:
    """tritonclient's infer on the ensemble, one client per thread, asking for the top k."""
    import tritonclient.grpc as grpcclient

    from tvision_export import contract
    from tvision_export.spec import DEFAULT_SPEC

    raw_clients = threading.local()

    def raw_call(image: BenchImage) -> int:
        client = getattr(raw_clients, "client", None)
        if client is None:
            client = grpcclient.InferenceServerClient(grpc_url)
            raw_clients.client = client
        tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image.data]], dtype=np.object_))
        output = grpcclient.InferRequestedOutput(contract.ENSEMBLE_OUTPUT, class_count=TOP_K)
        client.infer(DEFAULT_SPEC.name, [tensor], outputs=[output], client_timeout=120)
        return len(image.data)

    return raw_call


def render_sdk_table(report: SdkReport) -> str:
    lines = [
        f"SDK vs tritonclient on {report.cpu_count} CPU cores, concurrency "
        f"{report.concurrency}, {report.rounds} alternating rounds of {report.duration_s:g} s",
        *rate_lines(report.results, "client", 14),
        ratio_line("SDK / tritonclient throughput", report.sdk_over_tritonclient, SDK_TARGET),
    ]
    return "\n".join(lines)
