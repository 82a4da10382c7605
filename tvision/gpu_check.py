"""``tvision gpu-check``: the gpu target on a real GPU, measured as ``tvision bench`` does.

Exports the gpu target (optionally with TensorRT FP16), serves it with the serving image
under Docker with ``--gpus all`` (or any Triton you start yourself, ``--url``), and
measures served throughput against client-side preprocessing and the in-process limit
(ONNX Runtime with CUDA). It refuses to run, loudly and with exit code 2, where there is
no GPU: a skipped GPU check must never read as a passed one.

It cannot run on the development machines (no GPU). Everything it calls is tested there:
the export, the benchmark paths (against the CPU server), the Docker command, the refusal.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tvision.server.security import restricted_api_args

if TYPE_CHECKING:  # pragma: no cover
    from tvision.bench.report import RunResult
    from tvision_export.options import ServingOptions

DEFAULT_IMAGE = "registry.example.com/tvision/tritonserver:26.09-py3-tvision"


class GpuCheckError(Exception):
    """The check cannot run here; the message says why and what to do."""


def require_gpu() -> str:
    """The GPUs ``nvidia-smi -L`` lists.

    Raises:
        GpuCheckError: no nvidia-smi, or it lists no GPU.
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise GpuCheckError(
            "no GPU here: nvidia-smi is not installed. Run `tvision gpu-check` on a GPU node; "
            "it does not skip, so a CI job without a GPU fails instead of passing."
        )
    completed = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    gpus = completed.stdout.strip()
    if completed.returncode != 0 or not gpus:
        raise GpuCheckError(f"no GPU here: nvidia-smi -L found none ({completed.stderr.strip()})")
    return gpus


def require_cuda_onnxruntime() -> list[str]:
    """ONNX Runtime providers for the in-process limit on the GPU.

    Raises:
        GpuCheckError: this ONNX Runtime has no CUDA provider.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise GpuCheckError(
            "this onnxruntime has no CUDAExecutionProvider (it has "
            f"{', '.join(available)}): pip install onnxruntime-gpu for the in-process limit"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def docker_command(
    image: str, repository: Path, name: str, ports: tuple[int, int, int], admin_key: str
) -> list[str]:
    """``docker run`` for the serving image on all GPUs, ports on loopback only, the admin
    APIs behind ``admin_key`` as in every overlay."""
    from tvision_export.configs import TENSORRT_CACHE_DIR

    grpc, http, metrics = ports
    return [
        "docker", "run", "--rm", "--detach", "--name", name, "--gpus", "all",
        "--shm-size", "1g",
        "-p", f"127.0.0.1:{grpc}:8001", "-p", f"127.0.0.1:{http}:8000",
        "-p", f"127.0.0.1:{metrics}:8002",
        "-v", f"{repository.resolve()}:/models:ro",
        # The engine cache the gpu target's config points at, kept beside the repository.
        "-v", f"{(repository.parent / 'tensorrt-cache').resolve()}:{TENSORRT_CACHE_DIR}",
        image, "tritonserver", "--model-repository=/models", "--strict-readiness=true",
        *restricted_api_args(admin_key),
    ]  # fmt: skip


@dataclass
class RemoteServer:
    """A server this process did not start, as the benchmark paths address one
    (``tvision.bench.paths.BenchServer``)."""

    grpc_url: str
    http_url: str
    process: subprocess.Popen[bytes] | None = None  # not started here: no process to meter
    notes: list[str] = field(default_factory=list)
    # Statistics are an admin API; a server started with a key needs it here.
    admin_grpc_headers: dict[str, str] = field(default_factory=dict)

    def wait_until_ready(self, model: str, timeout_s: float) -> None:
        """Raises GpuCheckError when the ensemble is not ready in time (an engine build
        can take minutes on the first start)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                url = f"{self.http_url}/v2/models/{model}/ready"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(2)
        raise GpuCheckError(f"{model} was not ready at {self.http_url} after {timeout_s:.0f} s")


def start_container(command: list[str]) -> None:
    """Run ``docker run --detach ...`` (``command``) and return once it has started.

    Raises:
        GpuCheckError: the docker client is missing, or docker refused to start the
            container (no daemon, an image it cannot pull, no GPU runtime); the message
            holds what docker said.
    """
    try:
        subprocess.run(command, check=True, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError as exc:
        raise GpuCheckError(
            f"{command[0]} is not installed: install it, or start Triton and pass --url"
        ) from exc
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or "").strip() or "(nothing on stderr)"
        raise GpuCheckError(
            f"docker run exited with code {exc.returncode}: {said}. Start Triton yourself "
            "and pass --url, or fix the above."
        ) from exc


@dataclass(frozen=True)
class GpuCheckReport:
    """What ``tvision gpu-check`` measured, and where."""

    gpus: str  # as nvidia-smi -L lists them
    image: str  # the serving image started, or the URL of the Triton given
    ready_s: float  # from start until the ensemble was ready (engine builds included)
    options: ServingOptions
    results: list[RunResult]  # the in-process limit, then served and client-side


def run_gpu_check(
    image: str = DEFAULT_IMAGE,
    url: str | None = None,
    fp16: bool = True,
    duration_s: float = 10.0,
    concurrencies: tuple[int, ...] = (16, 64),
    ready_timeout_s: float = 1800.0,
) -> GpuCheckReport:
    """Export the gpu target, serve it (Docker, or the Triton at ``url``), and measure.

    Raises:
        GpuCheckError: it cannot run here (no GPU, no CUDA ONNX Runtime, no Docker, a
            container that did not start or get ready).
    """
    from tvision_export.exporter import export_model
    from tvision_export.options import ServingOptions
    from tvision_export.spec import DEFAULT_SPEC

    gpus = require_gpu()
    providers = require_cuda_onnxruntime()
    if url is None and shutil.which("docker") is None:
        raise GpuCheckError("docker is not installed: install it, or start Triton and pass --url")
    options = ServingOptions(target="gpu", fp16=fp16)
    with tempfile.TemporaryDirectory(prefix="tvision-gpu-check-") as work_dir:
        repository = Path(work_dir) / "model_repository"
        export = export_model(DEFAULT_SPEC, repository, options)
        container = f"tvision-gpu-check-{int(time.time())}"
        server = _server(image, url, repository, container)
        try:
            started = time.monotonic()
            server.wait_until_ready(DEFAULT_SPEC.name, ready_timeout_s)
            ready_s = time.monotonic() - started
            results = _measure(server, options, export.written.classifier_onnx, providers,
                               duration_s, concurrencies)  # fmt: skip
        finally:
            if url is None:
                subprocess.run(["docker", "stop", container], check=False, capture_output=True)
    return GpuCheckReport(gpus, image if url is None else url, ready_s, options, results)


def _server(image: str, url: str | None, repository: Path, container: str) -> RemoteServer:
    """The Triton at ``url``, or ``image`` started under Docker with a key of its own.

    Raises:
        GpuCheckError: the container did not start.
    """
    from tvision.server import ServerPorts
    from tvision.server.security import GRPC_ADMIN_KEY_HEADER, new_admin_key

    if url is not None:
        host = url.rsplit(":", 1)[0]
        return RemoteServer(url, f"http://{host}:8000")
    ports = ServerPorts.free()
    admin_key = new_admin_key()
    start_container(
        docker_command(
            image, repository, container, (ports.grpc, ports.http, ports.metrics), admin_key
        )
    )
    return RemoteServer(
        f"127.0.0.1:{ports.grpc}",
        f"http://127.0.0.1:{ports.http}",
        admin_grpc_headers={GRPC_ADMIN_KEY_HEADER: admin_key},
    )


def _measure(
    server: RemoteServer,
    options: ServingOptions,
    classifier_onnx: Path,
    providers: list[str],
    duration_s: float,
    concurrencies: tuple[int, ...],
) -> list[RunResult]:
    """The in-process limit, then served and client-side at each concurrency."""
    from tvision.bench.images import bench_images
    from tvision.bench.paths import BenchPaths
    from tvision_export.spec import DEFAULT_SPEC

    bench = BenchPaths(server, DEFAULT_SPEC, options, bench_images(), duration_s)
    results = [bench.limit(classifier_onnx, providers)]
    for concurrency in concurrencies:
        results.append(bench.served(concurrency, DEFAULT_SPEC.name))
        results.append(bench.client_side(concurrency))
    return results


def render_gpu_check(report: GpuCheckReport) -> str:
    """Served and client-side throughput side by side with the in-process limit, as ratios."""
    results = report.results
    limit = next(r for r in results if r.path == "limit")
    lines = [
        f"GPUs: {report.gpus}",
        f"server: {report.image} (ready after {report.ready_s:.0f} s)",
        f"in-process limit (ONNX Runtime CUDA, same preprocessing): {limit.images_per_s:.0f} img/s",
        "",
        f"{'path':<12} {'callers':>7} {'img/s':>8} {'/limit':>7} {'p99 ms':>8}",
    ]
    for result in results:
        if result.path == "limit":
            continue
        lines.append(
            f"{result.path:<12} {result.concurrency:>7} {result.images_per_s:>8.0f} "
            f"{result.images_per_s / limit.images_per_s:>7.2f} {result.p99_ms:>8.0f}"
        )
    return "\n".join(lines)
