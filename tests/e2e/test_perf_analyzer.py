"""NVIDIA's perf_analyzer (``make test`` installs it, as it installs checkov) against the real
server: the input file it sends is what the server classifies, a refusal reaches its report,
and ``tvision bench --perf-analyzer`` says when the two tools disagree, and why."""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from tests.helpers import run_tvision
from tvision.bench.images import BenchImage
from tvision.bench.perf_analyzer import (
    PerfAnalyzerError,
    PerfAnalyzerReport,
    PerfAnalyzerResult,
    PerfAnalyzerTool,
    input_data,
    render,
    run_perf_analyzer,
)
from tvision.bench.report import RunResult
from tvision.exit_codes import EXIT_COULD_NOT_RUN
from tvision_export.samples import sample_photos
from tvision_export.spec import DEFAULT_SPEC

MODEL = DEFAULT_SPEC.name


def _photos() -> list[BenchImage]:
    """Two real photos as JPEG and one as PNG, each at a size clients send."""
    images = []
    for photo, image_format in zip(sample_photos()[:3], ("JPEG", "JPEG", "PNG"), strict=True):
        buffer = io.BytesIO()
        Image.open(photo.path).convert("RGB").resize((640, 480)).save(buffer, image_format)
        images.append(BenchImage(f"{photo.name} {image_format}", buffer.getvalue()))
    return images


def _ensemble_counts(server: Any) -> tuple[int, int]:
    """(successful, failed) requests of the ensemble, from Triton's own statistics."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(
            model_name=MODEL, headers=server.admin_grpc_headers, as_json=True
        )
    inference = stats["model_stats"][0]["inference_stats"]
    return int(inference["success"].get("count", 0)), int(inference["fail"].get("count", 0))


@pytest.fixture(scope="module")
def tool() -> PerfAnalyzerTool:
    return PerfAnalyzerTool.installed()  # fails (not skips) where make test did not install it


@pytest.mark.e2e
def test_the_input_file_holds_each_image_as_the_bytes_tensor_triton_reads(tmp_path) -> None:
    images = _photos()
    document = json.loads(json.dumps(input_data(images)))
    sent = []
    for entry in document["data"]:
        serialized = base64.b64decode(entry["IMAGE"]["content"]["b64"])
        (length,) = struct.unpack("<I", serialized[:4])
        assert entry["IMAGE"]["shape"] == [1] and length == len(serialized) - 4
        sent.append(serialized[4:])
    assert sent == [image.data for image in images]


@pytest.mark.e2e
def test_the_server_classifies_everything_perf_analyzer_sends(
    tool, triton_server, tmp_path
) -> None:
    input_file = tmp_path / "input-data.json"
    input_file.write_text(json.dumps(input_data(_photos())))
    succeeded_before, failed_before = _ensemble_counts(triton_server)
    result = run_perf_analyzer(tool, triton_server, MODEL, input_file, 1, duration_s=1.5)
    succeeded, failed = _ensemble_counts(triton_server)
    assert result.requests > 0 and result.images_per_s > 0
    assert result.p99_ms >= result.p50_ms > 0
    # Every request it sent was classified: counted by Triton as a success, none failed.
    assert succeeded - succeeded_before == result.requests
    assert failed == failed_before
    assert result.client_cpu_ms_per_image > 0 and result.server_cpu_ms_per_image > 0


@pytest.mark.e2e
def test_an_image_the_server_refuses_fails_the_run_with_the_servers_message(
    tool, triton_server, tmp_path
) -> None:
    input_file = tmp_path / "input-data.json"
    input_file.write_text(json.dumps(input_data([BenchImage("text", b"definitely not jpeg")])))
    with pytest.raises(PerfAnalyzerError, match="not a recognised image"):
        run_perf_analyzer(tool, triton_server, MODEL, input_file, 1, duration_s=0.6)


def test_a_missing_install_names_the_make_target(tmp_path) -> None:
    with pytest.raises(PerfAnalyzerError, match=r"run `make perf-analyzer`"):
        PerfAnalyzerTool.installed(tmp_path / "perf-analyzer")


def _served(concurrency: int, images_per_s: float) -> RunResult:
    return RunResult(
        "served", concurrency, 100, 1.0, images_per_s, 20.0, 40.0, 50_000.0, 0.0137, 0.0007
    )


def _measured(concurrency: int, images_per_s: float) -> PerfAnalyzerResult:
    return PerfAnalyzerResult(concurrency, 100, images_per_s, 19.0, 41.0, 0.31, 12.9)


def test_the_report_says_where_the_tools_disagree_and_what_each_spent() -> None:
    """Figures made up for the renderer (no server): 10% apart agrees, 25% does not."""
    limit = RunResult("limit", 2, 400, 2.0, 200.0, 30.0, 60.0, 0.0, 0.0, 0.0107, note="batch 4")
    report = PerfAnalyzerReport(
        cpu_count=2, duration_s=1.0, image_bytes={"a": 1}, limit=limit,
        served=[_served(1, 50.0), _served(16, 100.0)],
        perf_analyzer=[_measured(1, 54.9), _measured(16, 125.0)],
    )  # fmt: skip
    text = render(report)
    assert "1.098x" in text and "1.250x" in text and "0.625x" in text  # pa/bench, pa/limit
    assert "at concurrency 16 they differ by 25%" in text
    assert "client 0.31 ms (perf_analyzer) against 0.70 ms (SDK)" in text
    assert "server 12.90 against 13.70 ms" in text
    assert "at concurrency 1 they differ" not in text and "agree within" not in text
    agreeing = PerfAnalyzerReport(**{**report.__dict__, "perf_analyzer": [_measured(1, 50.0)]})
    agreeing.served = [_served(1, 50.0)]
    assert "agree within 10% at every concurrency" in render(agreeing)


def test_perf_analyzer_runs_refuse_options_it_does_not_measure() -> None:
    completed = run_tvision("bench", "--perf-analyzer", "--set", "classifier_instances=1")
    assert completed.returncode == EXIT_COULD_NOT_RUN
    assert "--perf-analyzer measures the exported defaults: drop --set" in completed.stderr


def test_an_images_folder_without_images_is_named(tmp_path) -> None:
    from tvision.bench.images import images_in

    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"no \.jpg, \.jpeg, \.png, \.webp, \.bmp files in it"):
        images_in(tmp_path)
    with pytest.raises(ValueError, match="no such directory"):
        images_in(tmp_path / "missing")
