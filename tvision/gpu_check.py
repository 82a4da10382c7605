"""``tvision gpu-check``: the gpu target on a real GPU, measured as ``tvision bench`` does.

Exports the gpu target (optionally with TensorRT FP16) once per preprocessing path (the
python backend, and DALI with nvJPEG), serves each with the serving image under Docker
with ``--gpus all`` (or any Triton you start yourself, ``--url``), and measures served
throughput and GPU utilisation against client-side preprocessing and the in-process limit
(ONNX Runtime with CUDA), and the DALI pipeline's pixels on the GPU against the reference.
It refuses to run, loudly and with exit code 2, where there is no GPU: a skipped GPU
check must never read as a passed one.

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
    from tvision.fidelity import StrategyResult
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
    # Mean GPU utilisation (nvidia-smi, %) while each served row ran, by (path, callers).
    gpu_busy: dict[tuple[str, int], float] = field(default_factory=dict)
    # The DALI pipeline on this GPU against the reference (``fidelity.StrategyResult``).
    dali_fidelity: StrategyResult | None = None


def run_gpu_check(
    image: str = DEFAULT_IMAGE,
    url: str | None = None,
    fp16: bool = True,
    duration_s: float = 10.0,
    concurrencies: tuple[int, ...] = (16, 64),
    ready_timeout_s: float = 1800.0,
    preprocessors: tuple[str, ...] = ("python", "dali"),
) -> GpuCheckReport:
    """Export the gpu target once per preprocessing path, serve each (Docker, or the
    Triton at ``url``, which then serves the last one exported), and measure.

    Raises:
        GpuCheckError: it cannot run here (no GPU, no CUDA ONNX Runtime, no Docker, a
            container that did not start or get ready, no DALI for the DALI path).
    """
    from tvision_export.options import ServingOptions

    gpus = require_gpu()
    providers = require_cuda_onnxruntime()
    if url is None and shutil.which("docker") is None:
        raise GpuCheckError("docker is not installed: install it, or start Triton and pass --url")
    report = GpuCheckReport(gpus, image if url is None else url, 0.0,
                            ServingOptions(target="gpu", fp16=fp16), [])  # fmt: skip
    for preprocess in preprocessors:
        options = ServingOptions(target="gpu", fp16=fp16, preprocess=preprocess)
        _check_one_path(report, options, image, url, duration_s, concurrencies,
                        ready_timeout_s, providers)  # fmt: skip
    return report


def _check_one_path(
    report: GpuCheckReport, options: ServingOptions, image: str, url: str | None,
    duration_s: float, concurrencies: tuple[int, ...], ready_timeout_s: float,
    providers: list[str],
) -> None:  # fmt: skip
    """Export, serve and measure one preprocessing path into ``report``."""
    from tvision_export.exporter import export_model
    from tvision_export.spec import DEFAULT_SPEC

    with tempfile.TemporaryDirectory(prefix="tvision-gpu-check-") as work_dir:
        repository = Path(work_dir) / "model_repository"
        export = export_model(DEFAULT_SPEC, repository, options)
        onnx = export.written.classifier_onnx
        if options.preprocess == "dali":
            report.dali_fidelity = dali_fidelity_on_gpu(onnx, providers)
        container = f"tvision-gpu-check-{options.preprocess}-{int(time.time())}"
        server = _server(image, url, repository, container)
        try:
            started = time.monotonic()
            server.wait_until_ready(DEFAULT_SPEC.name, ready_timeout_s)
            report.ready_s = max(report.ready_s, time.monotonic() - started)
            _measure(report, server, options, onnx, providers, duration_s, concurrencies)
        finally:
            if url is None:
                subprocess.run(["docker", "stop", container], check=False, capture_output=True)


def dali_fidelity_on_gpu(onnx: Path, providers: list[str]) -> StrategyResult:
    """The served DALI pipeline (nvJPEG, GPU 0) against the reference on the sample photos
    at the hardest sizes, as ``tvision fidelity`` measures its CPU twin.

    Raises:
        GpuCheckError: DALI is not installed here.
    """
    import json

    import numpy as np
    import onnxruntime as ort

    from tvision.dali_twin import INSTALL_HINT, DaliTwin, DaliUnavailable
    from tvision.fidelity import StrategyResult, variants
    from tvision.validate import COMPARED_CLASSES
    from tvision_export.reference import reference_preprocess
    from tvision_export.samples import bundled_photos
    from tvision_export.spec import DEFAULT_SPEC

    try:
        pipeline = DaliTwin(json.loads(DEFAULT_SPEC.preprocess.to_json()), device="gpu")
    except DaliUnavailable as exc:
        raise GpuCheckError(f"the DALI path's fidelity needs DALI here: {INSTALL_HINT}") from exc
    session = ort.InferenceSession(str(onnx), providers=providers)
    name = session.get_inputs()[0].name
    result = StrategyResult("dali-gpu")
    for photo in bundled_photos():
        for file_name, data in variants(photo.path, "quirks").items():
            (served,) = session.run(None, {name: pipeline.preprocess_one(data)[None]})
            (expected,) = session.run(
                None, {name: reference_preprocess(data, DEFAULT_SPEC.preprocess)[None]}
            )
            top = np.argsort(served[0])[::-1][:COMPARED_CLASSES]
            result.images += 1
            result.diffs.append(float(np.max(np.abs(served[0][top] - expected[0][top]))))
            if int(top[0]) == int(expected[0].argmax()):
                result.top1_agreements += 1
            else:
                result.disagreements.append(file_name)
    return result


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
    report: GpuCheckReport,
    server: RemoteServer,
    options: ServingOptions,
    classifier_onnx: Path,
    providers: list[str],
    duration_s: float,
    concurrencies: tuple[int, ...],
) -> None:
    """The in-process limit (once), then served (with the GPU's utilisation) and, for the
    python path, client-side at each concurrency."""
    from tvision.bench.images import bench_images
    from tvision.bench.paths import BenchPaths
    from tvision_export.spec import DEFAULT_SPEC

    bench = BenchPaths(server, DEFAULT_SPEC, options, bench_images(), duration_s)
    if not any(result.path == "limit" for result in report.results):
        report.results.append(bench.limit(classifier_onnx, providers))
    path = f"served-{options.preprocess}"
    for concurrency in concurrencies:
        with GpuUtilisation() as busy:
            report.results.append(bench.served(concurrency, DEFAULT_SPEC.name, path=path))
        report.gpu_busy[(path, concurrency)] = busy.mean
        if options.preprocess == "python":
            report.results.append(bench.client_side(concurrency))


class GpuUtilisation:
    """Mean ``nvidia-smi`` GPU utilisation (%, over all GPUs) while the block runs."""

    def __init__(self, interval_s: float = 0.5) -> None:
        import threading

        self.samples: list[float] = []
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(self.interval_s):
            completed = subprocess.run(query, capture_output=True, text=True, check=False)
            values = [float(v) for v in completed.stdout.split() if v.replace(".", "").isdigit()]
            if values:
                self.samples.append(sum(values) / len(values))

    def __enter__(self) -> GpuUtilisation:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def render_gpu_check(report: GpuCheckReport) -> str:
    """Served and client-side throughput side by side with the in-process limit, as ratios."""
    results = report.results
    limit = next(r for r in results if r.path == "limit")
    lines = [
        f"GPUs: {report.gpus}",
        f"server: {report.image} (ready after {report.ready_s:.0f} s)",
        f"in-process limit (ONNX Runtime CUDA, same preprocessing): {limit.images_per_s:.0f} img/s",
        "",
        f"{'path':<14} {'callers':>7} {'img/s':>8} {'/limit':>7} {'p99 ms':>8} {'GPU busy':>9}",
    ]
    for result in results:
        if result.path == "limit":
            continue
        busy = report.gpu_busy.get((result.path, result.concurrency))
        lines.append(
            f"{result.path:<14} {result.concurrency:>7} {result.images_per_s:>8.0f} "
            f"{result.images_per_s / limit.images_per_s:>7.2f} {result.p99_ms:>8.0f}"
            + (f" {busy:>8.0f}%" if busy is not None else "")
        )
    fidelity = report.dali_fidelity
    if fidelity is not None:
        lines.append(
            f"DALI on this GPU (nvJPEG) vs the reference, {fidelity.images} photos: top-1 "
            f"agreement {fidelity.top1_agreement:.1%}, max dp {max(fidelity.diffs, default=0):.4f}"
            + (" (meets the bound)" if fidelity.meets_bound() else " (MISSES the bound)")
        )
    return "\n".join(lines)
