"""``tvision bench``: the served ensemble against its in-process limit and its alternatives.

Everything runs in one process, on this machine, against one real embedded server, with the
same images, so the figures are comparable within a run even on a noisy machine:

1. limit        decode + preprocess + ONNX Runtime in this process, no server, best batch;
2. served       the SDK sends image bytes to the ensemble;
3. client-side  the client preprocesses and sends FP32 tensors to the classifier model;
4. naive        the python_backend example's setup: per-request preprocessing, full
                decode, no dynamic batching, one instance (written only for this run).

``tvision bench-sdk`` compares the SDK against raw tritonclient on the same server.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tvision.server import ServerPorts, TritonServer

PATHS = ("limit", "served", "client-side", "naive")
CONCURRENCIES = (1, 4, 16, 32)
LIMIT_BATCH_SIZES = (1, 4, 8, 16)
TOP_K = 5
# Pillow's default and a typical camera/web setting.
JPEG_QUALITY = 75


@dataclass(frozen=True)
class BenchImage:
    name: str
    data: bytes


@dataclass
class RunResult:
    path: str
    concurrency: int
    images: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    wire_bytes_per_image: float
    server_cpu_s_per_image: float
    client_cpu_s_per_image: float
    errors: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    server_cpu_ms_per_image_by_part: dict[str, float] = field(default_factory=dict)
    note: str = ""


def bench_images() -> list[BenchImage]:
    """Real sample photos re-encoded: six 640x480 JPEGs, two 1920x1080 JPEGs and a
    640x480 PNG, sent in turn."""
    from PIL import Image

    from tvision_export.samples import sample_photos

    images = []
    photos = sample_photos()
    for photo in photos:
        rgb = Image.open(photo.path).convert("RGB")
        buffer = io.BytesIO()
        rgb.resize((640, 480)).save(buffer, "JPEG", quality=JPEG_QUALITY)
        images.append(BenchImage(f"{photo.name} 640x480 JPEG", buffer.getvalue()))
    for photo in photos[:2]:
        rgb = Image.open(photo.path).convert("RGB")
        buffer = io.BytesIO()
        rgb.resize((1920, 1080)).save(buffer, "JPEG", quality=JPEG_QUALITY)
        images.append(BenchImage(f"{photo.name} 1920x1080 JPEG", buffer.getvalue()))
    rgb = Image.open(photos[0].path).convert("RGB")
    buffer = io.BytesIO()
    rgb.resize((640, 480)).save(buffer, "PNG")
    images.append(BenchImage(f"{photos[0].name} 640x480 PNG", buffer.getvalue()))
    return images


def _percentile_ms(latencies_s: list[float], fraction: float) -> float:
    if not latencies_s:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, fraction * 100))


class _CpuMeter:
    """CPU seconds of this process and of the server's whole process tree."""

    def __init__(self, server_pid: int | None) -> None:
        import psutil

        self._server = psutil.Process(server_pid) if server_pid else None

    def server_s(self) -> float:
        return sum(self.server_by_part().values())

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


def run_closed_loop(
    call: Callable[[BenchImage], int],
    images: Sequence[BenchImage],
    concurrency: int,
    duration_s: float,
) -> tuple[int, float, list[float], int, int]:
    """``concurrency`` threads call ``call`` back to back for ``duration_s``.

    ``call`` returns the bytes it put on the wire. Returns (images, seconds, latencies,
    wire bytes, errors).
    """
    latencies: list[float] = []
    wire_bytes = 0
    errors = 0
    counter = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def worker() -> None:
        nonlocal wire_bytes, errors, counter
        local_latencies = []
        local_bytes = 0
        local_errors = 0
        while time.perf_counter() < stop_at:
            with lock:
                image = images[counter % len(images)]
                counter += 1
            started = time.perf_counter()
            try:
                local_bytes += call(image)
            except Exception:
                local_errors += 1
                continue
            local_latencies.append(time.perf_counter() - started)
        with lock:
            latencies.extend(local_latencies)
            wire_bytes += local_bytes
            errors += local_errors

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), time.perf_counter() - started, latencies, wire_bytes, errors


class Bench:
    """Runs the benchmark paths against one server; see the module docstring."""

    def __init__(self, server: TritonServer, model: str, duration_s: float) -> None:
        from tvision_export.spec import DEFAULT_SPEC

        self.server = server
        self.model = model
        self.duration_s = duration_s
        self.images = bench_images()
        self.spec = DEFAULT_SPEC
        self.cpu = _CpuMeter(server.process.pid if server.process else None)

    # -- helpers ---------------------------------------------------------------------

    def _preprocessor(self) -> Any:
        from tvision_export.configs import ServingOptions
        from tvision_export.triton_models.preprocess import ImagePreprocessor

        options = ServingOptions()
        spec = json.loads(self.spec.preprocess.to_json())
        return ImagePreprocessor(spec, options.max_image_pixels, options.max_image_bytes)

    def _classifier_batch_counts(self, model: str) -> dict[int, int]:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(self.server.grpc_url) as client:
            stats = client.get_inference_statistics(model_name=model, as_json=True)
        counts: dict[int, int] = {}
        for model_stats in stats.get("model_stats", []):
            for batch in model_stats.get("batch_stats", []):
                size = int(batch["batch_size"])
                counts[size] = counts.get(size, 0) + int(batch["compute_infer"].get("count", 0))
        return counts

    def _measure(
        self,
        path: str,
        concurrency: int,
        call: Callable[[BenchImage], int],
        classifier: str,
    ) -> RunResult:
        # Warm up connections and instances outside the measurement.
        run_closed_loop(call, self.images, concurrency, min(1.0, self.duration_s / 4))
        batches_before = self._classifier_batch_counts(classifier)
        parts_before, client_before = self.cpu.server_by_part(), self.cpu.client_s()
        images, seconds, latencies, wire, errors = run_closed_loop(
            call, self.images, concurrency, self.duration_s
        )
        parts_after = self.cpu.server_by_part()
        client_cpu = self.cpu.client_s() - client_before
        by_part = {
            part: (spent - parts_before.get(part, 0.0)) * 1000.0 / max(images, 1)
            for part, spent in sorted(parts_after.items())
            if spent - parts_before.get(part, 0.0) > 0.01
        }
        server_cpu = sum(by_part.values()) * max(images, 1) / 1000.0
        batches_after = self._classifier_batch_counts(classifier)
        executed = {
            size: count - batches_before.get(size, 0)
            for size, count in sorted(batches_after.items())
            if count - batches_before.get(size, 0) > 0
        }
        return RunResult(
            path=path,
            concurrency=concurrency,
            images=images,
            seconds=seconds,
            images_per_s=images / seconds if seconds else 0.0,
            p50_ms=_percentile_ms(latencies, 0.50),
            p99_ms=_percentile_ms(latencies, 0.99),
            wire_bytes_per_image=wire / images if images else 0.0,
            server_cpu_s_per_image=server_cpu / images if images else 0.0,
            client_cpu_s_per_image=client_cpu / images if images else 0.0,
            errors=errors,
            batch_sizes=executed,
            server_cpu_ms_per_image_by_part=by_part,
        )

    # -- the paths -------------------------------------------------------------------

    def run_limit(self, onnx_path: Path) -> RunResult:
        """Same decode, preprocessing and ONNX Runtime, in-process, no server.

        Tries each batch size with as many worker threads as cores, each worker decoding its
        own batch and running a single-threaded ONNX Runtime session (decode and inference
        overlap across workers), and keeps the best. Pillow and ONNX Runtime release the
        GIL, so this uses every core.
        """
        import onnxruntime as ort

        threads = os.cpu_count() or 1
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        preprocessor = self._preprocessor()
        best: RunResult | None = None
        for batch_size in LIMIT_BATCH_SIZES:
            starts = itertools.count(step=batch_size)  # next() on it is atomic under the GIL

            def one_batch(
                _image: BenchImage, size: int = batch_size, starts: Iterator[int] = starts
            ) -> int:
                start = next(starts)
                chosen = [self.images[(start + i) % len(self.images)] for i in range(size)]
                crops = [preprocessor.decode(image.data) for image in chosen]
                session.run(None, {input_name: preprocessor.normalise(crops)})
                return size

            run_closed_loop(one_batch, self.images, threads, min(1.0, self.duration_s / 4))
            client_before = self.cpu.client_s()
            batches, seconds, latencies, done, errors = run_closed_loop(
                one_batch, self.images, threads, self.duration_s
            )
            result = RunResult(
                path="limit",
                concurrency=threads,
                images=done,
                seconds=seconds,
                images_per_s=done / seconds,
                p50_ms=_percentile_ms(latencies, 0.5),
                p99_ms=_percentile_ms(latencies, 0.99),
                wire_bytes_per_image=0.0,
                server_cpu_s_per_image=0.0,
                client_cpu_s_per_image=(self.cpu.client_s() - client_before) / max(done, 1),
                errors=errors,
                batch_sizes={batch_size: batches},
                note=f"batch {batch_size}, {threads} workers; latency per batch",
            )
            if best is None or result.images_per_s > best.images_per_s:
                best = result
        assert best is not None
        return best

    def run_served(self, concurrency: int, model: str, path: str) -> RunResult:
        from tvision_client import Client

        with Client(self.server.grpc_url, model=model, timeout_s=120) as client:
            client.model_info()

            def call(image: BenchImage) -> int:
                client.classify(image.data, top_k=TOP_K)
                return len(image.data)

            return self._measure(path, concurrency, call, f"{model}_classifier")

    def run_client_side(self, concurrency: int) -> RunResult:
        """The fallback users reach for: preprocess on the client, send FP32 tensors."""
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        classifier = f"{self.model}_classifier"
        preprocessor = self._preprocessor()
        channel = grpc.insecure_channel(
            self.server.grpc_url,
            options=[("grpc.max_send_message_length", 64 << 20)],
        )
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        size = self.spec.input_size_px

        def call(image: BenchImage) -> int:
            pixels = preprocessor.normalise([preprocessor.decode(image.data)])
            request = service_pb2.ModelInferRequest(model_name=classifier)
            tensor = request.inputs.add(name="input", datatype="FP32")
            tensor.shape.extend([1, 3, size, size])
            raw = pixels.tobytes()
            request.raw_input_contents.append(raw)
            output = request.outputs.add(name="probabilities")
            output.parameters["classification"].int64_param = TOP_K
            stub.ModelInfer(request, timeout=120)
            return len(raw)

        try:
            return self._measure("client-side", concurrency, call, classifier)
        finally:
            channel.close()


def _summarise(results: list[RunResult]) -> dict[str, Any]:
    def best(path: str) -> RunResult:
        return max((r for r in results if r.path == path), key=lambda r: r.images_per_s)

    def at(path: str, concurrency: int) -> RunResult:
        return next(r for r in results if r.path == path and r.concurrency == concurrency)

    served, limit, client_side = best("served"), best("limit"), best("client-side")
    naive_16 = at("naive", 16)
    served_16 = at("served", 16)
    return {
        "served_best_concurrency": served.concurrency,
        "served_over_limit": served.images_per_s / limit.images_per_s,
        "served_over_client_side": served.images_per_s / client_side.images_per_s,
        "client_side_bytes_over_served_bytes": (
            client_side.wire_bytes_per_image / served.wire_bytes_per_image
        ),
        "served_over_naive_at_16": served_16.images_per_s / naive_16.images_per_s,
        "targets": {
            "served_over_limit": 0.85,
            "served_over_client_side": 1.0,
            "client_side_bytes_over_served_bytes": 10.0,
            "served_over_naive_at_16": 2.0,
        },
    }


def serving_overrides(assignments: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` pairs into ``ServingOptions`` fields, typed like the defaults.

    Raises:
        ValueError: an unknown field or a value of the wrong form.
    """
    from dataclasses import fields

    from tvision_export.configs import ServingOptions

    defaults = {
        field.name: getattr(ServingOptions(), field.name) for field in fields(ServingOptions)
    }
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"--set needs KEY=VALUE with KEY one of {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            overrides[key] = text.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            overrides[key] = tuple(int(part) for part in text.split(",") if part)
        else:
            overrides[key] = type(default)(text)
    return overrides


def run_benchmark(
    quick: bool = False,
    concurrencies: Sequence[int] = CONCURRENCIES,
    duration_s: float | None = None,
    progress: Callable[[str], None] = lambda _message: None,
    overrides: dict[str, Any] | None = None,
    paths: Sequence[str] = PATHS,
) -> dict[str, Any]:
    """Export into a temporary repository, serve it, and run the chosen paths.

    ``overrides`` changes the exported ``ServingOptions`` (to compare configurations).
    Returns a JSON-ready dict: machine, settings, per-run results and, when every path
    ran, the ratios.
    """
    from tvision_export.configs import ServingOptions
    from tvision_export.exporter import export_model
    from tvision_export.spec import DEFAULT_SPEC

    duration = duration_s if duration_s is not None else (2.0 if quick else 10.0)
    options = ServingOptions(**(overrides or {}))
    with tempfile.TemporaryDirectory(prefix="tvision-bench-") as work_dir:
        repository = Path(work_dir) / "model_repository"
        progress("exporting the model and the naive baseline")
        export = export_model(DEFAULT_SPEC, repository, options, naive_baseline=True)
        onnx_path = (
            repository
            / export.written.names.classifier
            / str(export.written.version)
            / "model.onnx"
        )
        progress("starting tritonserver")
        with TritonServer(repository, ServerPorts.free()) as server:
            bench = Bench(server, DEFAULT_SPEC.name, duration)
            results: list[RunResult] = []
            if "limit" in paths:
                progress("in-process limit")
                results.append(bench.run_limit(onnx_path))
            for concurrency in concurrencies:
                if "served" in paths:
                    progress(f"served ensemble, concurrency {concurrency}")
                    results.append(bench.run_served(concurrency, DEFAULT_SPEC.name, "served"))
                if "client-side" in paths:
                    progress(f"client-side preprocessing, concurrency {concurrency}")
                    results.append(bench.run_client_side(concurrency))
                if "naive" in paths:
                    progress(f"naive ensemble, concurrency {concurrency}")
                    naive = f"{DEFAULT_SPEC.name}_naive"
                    results.append(bench.run_served(concurrency, naive, "naive"))
    return {
        "machine": {"cpu_count": os.cpu_count(), "quick": quick, "duration_s": duration},
        "serving_options": asdict(options),
        "set": sorted(overrides or {}),
        "image_bytes": {image.name: len(image.data) for image in bench.images},
        "results": [asdict(result) for result in results],
        "ratios": _summarise(results) if set(paths) == set(PATHS) else None,
    }


def render_table(report: dict[str, Any]) -> str:
    """A plain-text table of every run, then the ratios against their targets."""
    header = (
        f"{'path':<12}{'conc':>5}{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'wire B/img':>12}"
        f"{'srv CPU ms/img':>16}{'cli CPU ms/img':>16}  batch sizes executed"
    )
    lines = [
        f"tvision bench on {report['machine']['cpu_count']} CPU cores, "
        f"{report['machine']['duration_s']:g} s per run",
        header,
        "-" * len(header),
    ]
    for r in report["results"]:
        batches = " ".join(f"{size}x{count}" for size, count in r["batch_sizes"].items())
        lines.append(
            f"{r['path']:<12}{r['concurrency']:>5}{r['images_per_s']:>9.1f}{r['p50_ms']:>9.1f}"
            f"{r['p99_ms']:>9.1f}{r['wire_bytes_per_image']:>12.0f}"
            f"{r['server_cpu_s_per_image'] * 1000:>16.2f}"
            f"{r['client_cpu_s_per_image'] * 1000:>16.2f}  {batches} {r['note']}".rstrip()
        )
    served_runs = [r for r in report["results"] if r["path"] == "served"]
    if served_runs:
        served = max(served_runs, key=lambda r: r["images_per_s"])
        breakdown = ", ".join(
            f"{part} {ms:.1f}" for part, ms in served["server_cpu_ms_per_image_by_part"].items()
        )
        lines.append("")
        lines.append(
            f"server CPU ms/image, served at concurrency {served['concurrency']}: {breakdown}"
        )
    sizes = ", ".join(
        f"{name} {size / 1000:.0f} kB" for name, size in report["image_bytes"].items()
    )
    lines.append(f"images sent in turn: {sizes}")
    changed = {
        key: value for key, value in report["serving_options"].items() if key in report["set"]
    }
    if changed:
        lines.append(f"serving options changed for this run: {changed}")
    ratios = report["ratios"]
    if ratios is None:
        return "\n".join(lines)
    targets = ratios["targets"]
    lines.append("")
    for key, label in (
        ("served_over_limit", "served (best) / in-process limit"),
        ("served_over_client_side", "served (best) / client-side preprocessing (best)"),
        ("client_side_bytes_over_served_bytes", "bytes per image: client-side / served"),
        ("served_over_naive_at_16", "served / naive ensemble, concurrency 16"),
    ):
        verdict = "meets" if ratios[key] >= targets[key] else "MISSES"
        lines.append(f"{label:<52}{ratios[key]:>7.2f}x  target >= {targets[key]:g}x  {verdict}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Throughput and p99 latency against concurrency, one line per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    results = report["results"]
    limit = next(r for r in results if r["path"] == "limit")
    for path_name in ("served", "client-side", "naive"):
        runs = sorted(
            (r for r in results if r["path"] == path_name), key=lambda r: r["concurrency"]
        )
        xs = [r["concurrency"] for r in runs]
        throughput.plot(xs, [r["images_per_s"] for r in runs], marker="o", label=path_name)
        latency.plot(xs, [r["p99_ms"] for r in runs], marker="o", label=path_name)
    throughput.axhline(
        limit["images_per_s"], color="grey", linestyle="--", label="in-process limit"
    )
    for axis, title, unit in (
        (throughput, "Throughput", "images/s"),
        (latency, "p99 latency", "ms"),
    ):
        axis.set_xscale("log", base=2)
        concurrencies = sorted({r["concurrency"] for r in results if r["path"] == "served"})
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(unit)
        axis.set_title(f"{title} ({report['machine']['cpu_count']} CPU cores)")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- SDK against raw tritonclient ------------------------------------------------------


def run_sdk_benchmark(
    concurrency: int = 8,
    rounds: int = 3,
    duration_s: float = 5.0,
    progress: Callable[[str], None] = lambda _message: None,
) -> dict[str, Any]:
    """The SDK's classify against tritonclient's infer with class_count, same server and
    images, alternating rounds so that drift on a shared machine hits both alike."""
    import tritonclient.grpc as grpcclient

    from tvision_client import Client
    from tvision_export.configs import ServingOptions
    from tvision_export.exporter import export_model
    from tvision_export.spec import DEFAULT_SPEC

    images = bench_images()
    with tempfile.TemporaryDirectory(prefix="tvision-bench-sdk-") as work_dir:
        repository = Path(work_dir) / "model_repository"
        progress("exporting the model")
        export_model(DEFAULT_SPEC, repository, ServingOptions())
        progress("starting tritonserver")
        with TritonServer(repository, ServerPorts.free()) as server:
            sdk = Client(server.grpc_url, timeout_s=120)
            sdk.model_info()
            raw_clients = threading.local()

            def raw_call(image: BenchImage) -> int:
                client = getattr(raw_clients, "client", None)
                if client is None:
                    client = grpcclient.InferenceServerClient(server.grpc_url)
                    raw_clients.client = client
                tensor = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[image.data]], dtype=np.object_))
                output = grpcclient.InferRequestedOutput("PROBABILITIES", class_count=TOP_K)
                client.infer(DEFAULT_SPEC.name, [tensor], outputs=[output], client_timeout=120)
                return len(image.data)

            def sdk_call(image: BenchImage) -> int:
                sdk.classify(image.data, top_k=TOP_K)
                return len(image.data)

            rates: dict[str, list[float]] = {"sdk": [], "tritonclient": []}
            latencies: dict[str, list[float]] = {"sdk": [], "tritonclient": []}
            run_closed_loop(sdk_call, images, concurrency, 1.0)
            run_closed_loop(raw_call, images, concurrency, 1.0)
            for round_number in range(rounds):
                order = [("sdk", sdk_call), ("tritonclient", raw_call)]
                if round_number % 2:
                    order.reverse()
                for name, call in order:
                    progress(f"round {round_number + 1}/{rounds}: {name}")
                    done, seconds, lat, _wire, _errors = run_closed_loop(
                        call, images, concurrency, duration_s
                    )
                    rates[name].append(done / seconds)
                    latencies[name].extend(lat)
            sdk.close()
    summary = {
        name: {
            "images_per_s": statistics.mean(rates[name]),
            "rounds_images_per_s": rates[name],
            "p50_ms": _percentile_ms(latencies[name], 0.5),
            "p99_ms": _percentile_ms(latencies[name], 0.99),
        }
        for name in rates
    }
    return {
        "machine": {"cpu_count": os.cpu_count()},
        "concurrency": concurrency,
        "rounds": rounds,
        "duration_s": duration_s,
        "results": summary,
        "sdk_over_tritonclient": summary["sdk"]["images_per_s"]
        / summary["tritonclient"]["images_per_s"],
        "target": 0.97,
    }


def render_sdk_table(report: dict[str, Any]) -> str:
    lines = [
        f"SDK vs tritonclient on {report['machine']['cpu_count']} CPU cores, concurrency "
        f"{report['concurrency']}, {report['rounds']} alternating rounds of "
        f"{report['duration_s']:g} s",
        f"{'client':<14}{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}  per round",
    ]
    for name, r in report["results"].items():
        rounds = " ".join(f"{rate:.1f}" for rate in r["rounds_images_per_s"])
        lines.append(
            f"{name:<14}{r['images_per_s']:>9.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}  {rounds}"
        )
    ratio = report["sdk_over_tritonclient"]
    verdict = "meets" if ratio >= report["target"] else "MISSES"
    lines.append(f"SDK / tritonclient throughput: {ratio:.3f}x (target >= 0.97x) {verdict}")
    return "\n".join(lines)


# -- preprocessing micro-benchmark -----------------------------------------------------


def _normalise_transpose_then_scale(preprocessor: Any, crops: list[np.ndarray]) -> np.ndarray:
    """The obvious way, as the baseline: transpose, convert, then scale the whole batch."""
    pixels = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)
    pixels *= preprocessor.multiplier.reshape(1, 3, 1, 1)
    pixels += preprocessor.offset.reshape(1, 3, 1, 1)
    return pixels


def _time_ms(function: Callable[[], object], repeats: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1000.0


def run_preprocess_benchmark(repeats: int = 20) -> dict[str, Any]:
    """Milliseconds per image for each preprocessing speed-up and its baseline, in one run."""
    from tvision_export.configs import ServingOptions
    from tvision_export.spec import DEFAULT_SPEC
    from tvision_export.triton_models.preprocess import ImagePreprocessor

    options = ServingOptions()
    spec = json.loads(DEFAULT_SPEC.preprocess.to_json())

    def preprocessor(draft: bool, crop_box: bool) -> Any:
        return ImagePreprocessor(
            spec, options.max_image_pixels, options.max_image_bytes, draft, crop_box
        )

    variants = {
        "shipped (draft, crop box)": preprocessor(True, True),
        "no JPEG draft": preprocessor(False, True),
        "full-image resize": preprocessor(True, False),
    }
    decode: dict[str, dict[str, float]] = {}
    for image in bench_images():
        decode[image.name] = {
            name: _time_ms(lambda p=p, data=image.data: p.decode(data), repeats)
            for name, p in variants.items()
        }
    shipped = variants["shipped (draft, crop box)"]
    crops = [shipped.decode(image.data) for image in bench_images()[:8]]
    normalise = {
        "shipped (per-channel multiply into planar output)": _time_ms(
            lambda: shipped.normalise(crops), repeats
        )
        / len(crops),
        "transpose, convert, then scale": _time_ms(
            lambda: _normalise_transpose_then_scale(shipped, crops), repeats
        )
        / len(crops),
    }
    return {
        "machine": {"cpu_count": os.cpu_count()},
        "decode_ms": decode,
        "normalise_ms": normalise,
    }


def render_preprocess_table(report: dict[str, Any]) -> str:
    variants = list(next(iter(report["decode_ms"].values())))
    lines = [
        f"preprocessing, ms per image, on {report['machine']['cpu_count']} CPU cores (one thread)",
        f"{'image':<26}" + "".join(f"{name:>28}" for name in variants),
    ]
    for image, timings in report["decode_ms"].items():
        shipped = timings[variants[0]]
        cells = [f"{timings[variants[0]]:.2f}"] + [
            f"{timings[name]:.2f} ({timings[name] / shipped:.1f}x)" for name in variants[1:]
        ]
        lines.append(f"{image:<26}" + "".join(f"{cell:>28}" for cell in cells))
    (shipped_name, shipped_ms), (baseline_name, baseline_ms) = report["normalise_ms"].items()
    lines.append(
        f"normalise a batch of 8: {shipped_name} {shipped_ms:.3f} ms/image; "
        f"{baseline_name} {baseline_ms:.3f} ms/image ({baseline_ms / shipped_ms:.1f}x)"
    )
    return "\n".join(lines)
