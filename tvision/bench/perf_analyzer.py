"""``tvision bench --perf-analyzer``: NVIDIA's perf_analyzer measures the served ensemble,
beside ``tvision bench``'s own served figure and the in-process limit, in one run.

perf_analyzer is not PyPI's ``perf-analyzer`` package (a placeholder) but the binary inside
the ``tritonclient==2.51.0`` manylinux wheel. It loads ``libcudart.so.12`` even without a
GPU (from PyPI's ``nvidia-cuda-runtime-cu12``) and Debian's ``libb64-0d``. ``make
perf-analyzer`` installs them into ``.venv/tools/perf-analyzer``, as ``make test`` does.

For each concurrency, tvision bench's served path (the SDK, closed loop) runs, then
perf_analyzer at the same concurrency, with the same images, against the same server. The
two should agree within ``AGREEMENT``; where they do not, the report gives the client and
server CPU each spent per image, the usual reason on a machine they share.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tvision.bench.images import BenchImage
from tvision.bench.paths import BenchPaths, BenchServer
from tvision.bench.report import RunResult
from tvision.bench.server_side import CpuMeter, difference, inference_count
from tvision_export import contract

VERSION = "2.51.0"  # the tritonclient wheel that carries the binary
AGREEMENT = 0.10
WINDOWS = 3  # perf_analyzer reports the mean of its last three stable windows


class PerfAnalyzerError(Exception):
    """perf_analyzer is not installed, or it failed; the message says which and why."""


@dataclass(frozen=True)
class PerfAnalyzerTool:
    binary: Path
    library_dir: Path  # where libcudart.so.12 is

    @classmethod
    def installed(cls, root: Path | None = None) -> PerfAnalyzerTool:
        """The copy ``make perf-analyzer`` installs beside this environment.

        Raises:
            PerfAnalyzerError: it is not installed.
        """
        root = root or Path(sys.prefix) / "tools" / "perf-analyzer"
        binary = root / "bin" / "perf_analyzer"
        libraries = list(root.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
        if not binary.is_file() or not libraries:
            raise PerfAnalyzerError(
                f"perf_analyzer is not installed in {root}: run `make perf-analyzer` "
                f"(tritonclient=={VERSION}, nvidia-cuda-runtime-cu12 and Debian's libb64-0d)"
            )
        return cls(binary, libraries[0])

    def environment(self) -> dict[str, str]:
        paths = [str(self.library_dir), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
        return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(paths)}


@dataclass
class PerfAnalyzerResult:
    concurrency: int
    requests: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_ms_per_image: float
    server_cpu_ms_per_image: float


def edge_limits(repository: Path, concurrency: int) -> Any:
    """The edge's limits for perf_analyzer at ``concurrency``: at the exact per-client cap
    it is refused now and then (a worker's next request can reach nginx before its last one
    is counted out, and its statistics calls come from the same address); twice leaves
    room for both."""
    from tvision.server import edge_limits_for

    return edge_limits_for(repository, max_requests_per_client=2 * concurrency)


def input_data(images: Sequence[BenchImage], input_name: str = contract.ENSEMBLE_INPUT) -> dict:
    """perf_analyzer's ``--input-data`` document: one request per image, sent in turn.

    A BYTES tensor's ``b64`` content is the tensor serialized as Triton reads it: each
    element a 4-byte little-endian length, then its bytes.
    """
    return {
        "data": [
            {
                input_name: {
                    "content": {
                        "b64": base64.b64encode(struct.pack("<I", len(image.data)) + image.data)
                        .decode("ascii")
                    },
                    "shape": [1],
                }
            }
            for image in images
        ]
    }  # fmt: skip


def run_perf_analyzer(
    tool: PerfAnalyzerTool,
    server: BenchServer,
    model: str,
    input_file: Path,
    concurrency: int,
    duration_s: float,
) -> PerfAnalyzerResult:
    """perf_analyzer at one concurrency, ``WINDOWS`` windows of ``duration_s / WINDOWS``.

    Raises:
        PerfAnalyzerError: it failed; the message carries the end of its output.
    """
    meter = CpuMeter(server.process.pid if server.process else None)
    admin = server.admin_grpc_headers
    headers = [part for key, value in admin.items() for part in ("-H", f"{key}:{value}")]
    with tempfile.TemporaryDirectory(prefix="tvision-perf-analyzer-") as work_dir:
        csv_path = Path(work_dir) / "result.csv"
        command = [
            str(tool.binary), "-m", model, "-u", server.grpc_url, "-i", "grpc",
            "--input-data", str(input_file), "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(max(200, round(duration_s * 1000 / WINDOWS))),
            # Loose stability (max/min of the windows under 2x): figures are compared within
            # one run, and a strict criterion only makes a noisy machine measure for longer.
            "--stability-percentage", "100", "-f", str(csv_path), *headers,
        ]  # fmt: skip
        server_before = meter.server_by_part()
        sent_before = inference_count(server.grpc_url, model, server.admin_grpc_headers)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        completed = subprocess.run(
            command,
            env=tool.environment(),
            capture_output=True,
            text=True,
            timeout=duration_s * 10 + 60,
            check=False,
        )
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_s = sum(difference(meter.server_by_part(), server_before).values())
        # Everything it sent, warm-up and unstable windows too, is what the CPU covers.
        sent = inference_count(server.grpc_url, model, server.admin_grpc_headers) - sent_before
        if completed.returncode != 0 or not csv_path.exists():
            tail = (completed.stdout + completed.stderr).strip().splitlines()[-5:]
            raise PerfAnalyzerError(
                f"perf_analyzer failed (exit {completed.returncode}): " + " | ".join(tail)
            )
        row = next(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines()))
    sent = max(sent, 1)
    client_s = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return PerfAnalyzerResult(
        concurrency=concurrency,
        requests=sent,
        images_per_s=float(row["Inferences/Second"]),
        p50_ms=float(row["p50 latency"]) / 1000.0,
        p99_ms=float(row["p99 latency"]) / 1000.0,
        client_cpu_ms_per_image=client_s * 1000.0 / sent,
        server_cpu_ms_per_image=server_s * 1000.0 / sent,
    )


@dataclass
class PerfAnalyzerReport:
    cpu_count: int | None
    duration_s: float
    image_bytes: dict[str, int]
    limit: RunResult
    served: list[RunResult]
    perf_analyzer: list[PerfAnalyzerResult]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    bench: BenchPaths,
    tool: PerfAnalyzerTool,
    onnx_path: Path,
    concurrencies: Sequence[int],
    progress: Callable[[str], None] = lambda _message: None,
) -> PerfAnalyzerReport:
    """The in-process limit, then at each concurrency the served path and perf_analyzer."""
    progress("in-process limit")
    limit = bench.limit(onnx_path)
    served, measured = [], []
    with tempfile.TemporaryDirectory(prefix="tvision-perf-analyzer-") as work_dir:
        input_file = Path(work_dir) / "input-data.json"
        input_file.write_text(json.dumps(input_data(bench.images)), encoding="utf-8")
        for concurrency in concurrencies:
            progress(f"served ensemble (tvision bench), concurrency {concurrency}")
            served.append(bench.served(concurrency, bench.spec.name))
            progress(f"served ensemble (perf_analyzer), concurrency {concurrency}")
            measured.append(
                run_perf_analyzer(
                    tool, bench.server, bench.spec.name, input_file, concurrency, bench.duration_s
                )
            )
    return PerfAnalyzerReport(
        cpu_count=os.cpu_count(),
        duration_s=bench.duration_s,
        image_bytes={image.name: len(image.data) for image in bench.images},
        limit=limit,
        served=served,
        perf_analyzer=measured,
    )


def render(report: PerfAnalyzerReport) -> str:
    """Side by side per concurrency, as ratios, then whether the two tools agree and why not."""
    limit = report.limit.images_per_s
    header = (
        f"{'conc':>5}{'perf_analyzer img/s':>21}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'tvision bench img/s':>21}{'p50 ms':>8}{'p99 ms':>8}{'pa/bench':>10}{'pa/limit':>10}"
    )
    lines = [
        f"perf_analyzer {VERSION} and tvision bench, served ensemble, {report.cpu_count} CPU "
        f"cores, {report.duration_s:g} s per run, one server",
        header,
        "-" * len(header),
    ]
    disagreements = []
    for ours, theirs in zip(report.served, report.perf_analyzer, strict=True):
        ratio = theirs.images_per_s / ours.images_per_s
        lines.append(
            f"{theirs.concurrency:>5}{theirs.images_per_s:>21.1f}{theirs.p50_ms:>8.1f}"
            f"{theirs.p99_ms:>8.1f}{ours.images_per_s:>21.1f}{ours.p50_ms:>8.1f}"
            f"{ours.p99_ms:>8.1f}{ratio:>9.3f}x{theirs.images_per_s / limit:>9.3f}x"
        )
        if abs(ratio - 1.0) > AGREEMENT:
            disagreements.append(
                f"at concurrency {theirs.concurrency} they differ by {abs(ratio - 1):.0%}: "
                f"CPU per image, client {theirs.client_cpu_ms_per_image:.2f} ms "
                f"(perf_analyzer) against {ours.client_cpu_s_per_image * 1000:.2f} ms (SDK), "
                f"server {theirs.server_cpu_ms_per_image:.2f} against "
                f"{ours.server_cpu_s_per_image * 1000:.2f} ms, on the cores both share"
            )
    lines.append(
        f"in-process limit: {limit:.1f} img/s ({report.limit.note}); "
        f"images sent in turn: {len(report.image_bytes)}"
    )
    lines += disagreements or [
        f"perf_analyzer and tvision bench agree within {AGREEMENT:.0%} at every concurrency"
    ]
    return "\n".join(lines)
