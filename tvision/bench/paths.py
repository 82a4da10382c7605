"""The four benchmark paths, each measured the same way against one server.

1. limit        decode + preprocess + ONNX Runtime in this process, no server, best batch;
2. served       the SDK sends image bytes to the ensemble;
3. client-side  the client preprocesses and sends FP32 tensors to the classifier model;
4. naive        the python_backend example's setup, written by ``write_naive_baseline``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tvision.bench.defaults import TOP_K
from tvision.bench.images import BenchImage
from tvision.bench.load import LoadResult, run_closed_loop
from tvision.bench.report import RunResult
from tvision.bench.server_side import CpuMeter, difference, executed_batch_sizes
from tvision_export import configs, contract
from tvision_export.options import ServingOptions
from tvision_export.repository import ClassifierSource, ModelNames, WrittenVersion, write_version
from tvision_export.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import subprocess

    from tvision_export.triton_models.preprocess import ImagePreprocessor

LIMIT_BATCH_SIZES = (1, 4, 8, 16)
NAIVE_SUFFIX = "_naive"


def write_naive_baseline(
    repository: Path, name: str, source: ClassifierSource, options: ServingOptions
) -> WrittenVersion:
    """The python_backend example's setup, beside the real model, for comparison only.

    Written with the public repository writer, then changed the way a user starting from
    that example would have it: no dynamic batching (so each ``execute`` gets one request),
    one instance of each model, a full JPEG decode, and ONNX Runtime's default threading
    (a thread per core, spinning while idle). Its manifest no longer matches its configs.
    """
    naive = replace(
        options,
        preprocess_instances=1,
        classifier_instances=1,
        decode="exact",
        intra_op_threads=0,
        allow_spinning=True,
    )
    written = write_version(repository, name + NAIVE_SUFFIX, source, naive)
    # The example has no intake step; ours stays (it isolates requests) but, like the rest,
    # without a queue policy: nothing the example has.
    for model in (written.names.intake, written.names.preprocess, written.names.classifier):
        config_path = repository / model / contract.CONFIG_FILE
        config = configs.parse(config_path.read_text(encoding="utf-8"))
        config.ClearField("dynamic_batching")
        config_path.write_text(configs.to_text(config), encoding="utf-8")
    return written


def preprocessor(spec: ModelSpec, options: ServingOptions) -> ImagePreprocessor:
    """Exactly the server's image code, built by the model's own reader from the config
    the export writes, so no serving option can be forgotten here."""
    from tvision_export.triton_models.preprocess import preprocessor_from_config

    config = configs.preprocess_config(
        spec.name + contract.PREPROCESS_SUFFIX, spec.preprocess.to_json(), spec.input_dims, options
    )
    return preprocessor_from_config(config)


class BenchServer(Protocol):
    """What the paths need of a server: ``tvision.server.TritonServer``, or a server this
    process did not start (``tvision.gpu_check.RemoteServer``)."""

    @property
    def grpc_url(self) -> str: ...

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server's process, for its CPU time; None when it is not ours to meter."""
        ...

    @property
    def admin_grpc_headers(self) -> dict[str, str]:
        """Metadata the statistics API (an admin API) needs."""
        ...


class BenchPaths:
    """Runs the benchmark paths against one server, with the same images and meters."""

    def __init__(
        self,
        server: BenchServer,
        spec: ModelSpec,
        options: ServingOptions,
        images: list[BenchImage],
        duration_s: float,
    ) -> None:
        self.server = server
        self.spec = spec
        self.options = options
        self.names = ModelNames.for_model(spec.name)
        self.duration_s = duration_s
        self.images = images
        self.cpu = CpuMeter(server.process.pid if server.process else None)
        self._admin = server.admin_grpc_headers

    def _warm(self, call: Callable[[BenchImage], int], concurrency: int) -> None:
        run_closed_loop(call, self.images, concurrency, min(1.0, self.duration_s / 4))

    def _measure(
        self, path: str, concurrency: int, call: Callable[[BenchImage], int], classifier: str
    ) -> RunResult:
        self._warm(call, concurrency)
        batches_before = executed_batch_sizes(self.server.grpc_url, classifier, self._admin)
        parts_before, client_before = self.cpu.server_by_part(), self.cpu.client_s()
        load = run_closed_loop(call, self.images, concurrency, self.duration_s)
        parts = difference(self.cpu.server_by_part(), parts_before)
        client_cpu_s = self.cpu.client_s() - client_before
        images = max(load.calls, 1)
        batches = difference(
            executed_batch_sizes(self.server.grpc_url, classifier, self._admin), batches_before
        )
        return _result(
            path,
            concurrency,
            load,
            wire_bytes=load.units,
            server_cpu_s=sum(parts.values()),
            client_cpu_s=client_cpu_s,
            batch_sizes={int(size): int(count) for size, count in batches.items()},
            by_part={
                part: spent * 1000.0 / images for part, spent in parts.items() if spent > 0.01
            },
        )

    def limit(
        self, onnx_path: Path, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> RunResult:
        """Same decode, preprocessing and ONNX Runtime, in-process, no server.

        Tries each batch size with as many worker threads as cores, each worker decoding its
        own batch and running a single-threaded ONNX Runtime session (decode and inference
        overlap across workers), and keeps the best. Pillow and ONNX Runtime release the
        GIL, so this uses every core.
        """
        import onnxruntime as ort

        threads = os.cpu_count() or 1
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = 1
        session_options.inter_op_num_threads = 1
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(onnx_path), session_options, providers=list(providers))
        input_name = session.get_inputs()[0].name
        images = preprocessor(self.spec, self.options)
        best: RunResult | None = None
        for batch_size in LIMIT_BATCH_SIZES:
            starts = itertools.count(step=batch_size)  # next() on it is atomic under the GIL

            def one_batch(
                _image: BenchImage, size: int = batch_size, starts: Iterator[int] = starts
            ) -> int:
                start = next(starts)
                chosen = [self.images[(start + i) % len(self.images)] for i in range(size)]
                crops = [images.decode(image.data) for image in chosen]
                session.run(None, {input_name: images.normalise(crops)})
                return size

            self._warm(one_batch, threads)
            client_before = self.cpu.client_s()
            load = run_closed_loop(one_batch, self.images, threads, self.duration_s)
            result = _result(
                "limit",
                threads,
                load,
                images=load.units,
                client_cpu_s=self.cpu.client_s() - client_before,
                batch_sizes={batch_size: load.calls},
                note=f"batch {batch_size}, {threads} workers; latency per batch",
            )
            if best is None or result.images_per_s > best.images_per_s:
                best = result
        assert best is not None
        return best

    def served(self, concurrency: int, model: str, path: str = "served") -> RunResult:
        from tvision_client import Client

        with Client(self.server.grpc_url, model=model, timeout_s=120) as client:
            client.model_info()

            def call(image: BenchImage) -> int:
                client.classify(image.data, top_k=TOP_K)
                return len(image.data)

            return self._measure(path, concurrency, call, model + contract.CLASSIFIER_SUFFIX)

    def naive(self, concurrency: int) -> RunResult:
        return self.served(concurrency, self.spec.name + NAIVE_SUFFIX, "naive")

    def client_side(self, concurrency: int) -> RunResult:
        """The fallback users reach for: preprocess on the client, send FP32 tensors."""
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        images = preprocessor(self.spec, self.options)
        channel = grpc.insecure_channel(
            self.server.grpc_url, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def call(image: BenchImage) -> int:
            pixels = images.normalise([images.decode(image.data)])
            request = service_pb2.ModelInferRequest(model_name=self.names.classifier)
            tensor = request.inputs.add(name=contract.ONNX_INPUT, datatype="FP32")
            tensor.shape.extend(pixels.shape)
            raw = pixels.tobytes()
            request.raw_input_contents.append(raw)
            output = request.outputs.add(name=contract.ONNX_OUTPUT)
            output.parameters["classification"].int64_param = TOP_K
            stub.ModelInfer(request, timeout=120)
            return len(raw)

        try:
            return self._measure("client-side", concurrency, call, self.names.classifier)
        finally:
            channel.close()


def _result(
    path: str,
    concurrency: int,
    load: LoadResult,
    *,
    images: int | None = None,
    wire_bytes: int = 0,
    server_cpu_s: float = 0.0,
    client_cpu_s: float = 0.0,
    batch_sizes: dict[int, int] | None = None,
    by_part: dict[str, float] | None = None,
    note: str = "",
) -> RunResult:
    done = load.calls if images is None else images
    per_image = 1.0 / done if done else 0.0
    return RunResult(
        path=path,
        concurrency=concurrency,
        images=done,
        seconds=load.seconds,
        images_per_s=done / load.seconds if load.seconds else 0.0,
        p50_ms=load.percentile_ms(0.50),
        p99_ms=load.percentile_ms(0.99),
        # Divided, not multiplied by 1/done: 602112 * 117 * (1 / 117) is not 602112.
        wire_bytes_per_image=wire_bytes / done if done else 0.0,
        server_cpu_s_per_image=server_cpu_s * per_image,
        client_cpu_s_per_image=client_cpu_s * per_image,
        errors=load.errors,
        batch_sizes=batch_sizes or {},
        server_cpu_ms_per_image_by_part=by_part or {},
        note=note,
    )
