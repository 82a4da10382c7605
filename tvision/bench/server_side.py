"""What the server did: CPU by process (tritonserver and each model's stubs), batch sizes."""

from __future__ import annotations

import time
from typing import Any


class CpuMeter:
    """CPU seconds of this process and of the server's whole process tree."""

    def __init__(self, server_pid: int | None) -> None:
        import psutil

        self._server = psutil.Process(server_pid) if server_pid else None

    def server_by_part(self) -> dict[str, float]:
        """CPU seconds of the tritonserver process and of each model's backend stubs."""
        if self._server is None:
            return {}
        parts: dict[str, float] = {}
        for process in [self._server, *self._server.children(recursive=True)]:
            try:
                times = process.cpu_times()
                command = process.cmdline()
            except Exception:  # a child may exit between listing and reading
                continue
            if process.pid == self._server.pid or len(command) < 2:
                part = "tritonserver"
            else:
                # Stub arguments end with the instance name, e.g. "<model>_0_1", then "DEFAULT".
                part = command[-2].rsplit("_", 2)[0]
            parts[part] = parts.get(part, 0.0) + times.user + times.system
        return parts

    @staticmethod
    def client_s() -> float:
        return time.process_time()


def _model_stats(grpc_url: str, model: str, admin_headers: dict[str, str] | None) -> list[Any]:
    """Triton's statistics of ``model``'s versions (an admin API: pass the server's
    ``admin_grpc_headers``)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(grpc_url) as client:
        stats: dict[str, Any] = client.get_inference_statistics(
            model_name=model, headers=admin_headers, as_json=True
        )
    return list(stats.get("model_stats", []))


def executed_batch_sizes(
    grpc_url: str, model: str, admin_headers: dict[str, str] | None = None
) -> dict[int, int]:
    """How many executions of each batch size ``model`` has run, from Triton's statistics."""
    counts: dict[int, int] = {}
    for model_stats in _model_stats(grpc_url, model, admin_headers):
        for batch in model_stats.get("batch_stats", []):
            size = int(batch["batch_size"])
            counts[size] = counts.get(size, 0) + int(batch["compute_infer"].get("count", 0))
    return counts


def inference_count(grpc_url: str, model: str, admin_headers: dict[str, str] | None = None) -> int:
    """How many inferences ``model`` has run (successful or not), from Triton's statistics."""
    stats = _model_stats(grpc_url, model, admin_headers)
    return sum(int(each.get("inference_count", 0)) for each in stats)


def difference(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    """``after - before`` per key, keeping only keys that grew."""
    return {
        key: value - before.get(key, 0)
        for key, value in sorted(after.items())
        if value - before.get(key, 0) > 0
    }
