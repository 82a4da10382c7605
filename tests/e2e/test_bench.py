"""``tvision bench --quick`` produces well-formed output with every path (not its speed)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_tvision
from tvision.bench.report import PATHS
from tvision.exit_codes import EXIT_COULD_NOT_RUN

pytestmark = pytest.mark.e2e


def test_quick_bench_reports_every_path_ratio_and_plot(tmp_path) -> None:
    report_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    completed = run_tvision(
        "bench",
        "--quick",
        "--duration-s",
        "1",
        "--concurrency",  # two of the quick preset's four levels: every path, half the time
        "1,16",
        "--json",
        str(report_path),
        "--plot",
        str(plot_path),
        timeout_s=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert {result["path"] for result in report["results"]} == set(PATHS)
    for path in ("served", "client-side", "naive"):
        concurrencies = {r["concurrency"] for r in report["results"] if r["path"] == path}
        assert concurrencies == {1, 16}
    for result in report["results"]:
        assert result["images"] > 0 and result["errors"] == 0, result
        assert result["images_per_s"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0
        if result["path"] != "limit":
            assert result["server_cpu_s_per_image"] > 0 and result["batch_sizes"]
    served = [r for r in report["results"] if r["path"] == "served"]
    client_side = [r for r in report["results"] if r["path"] == "client-side"]
    # Bytes on the wire: encoded images against 3x224x224 float32 tensors.
    assert all(r["wire_bytes_per_image"] == 3 * 224 * 224 * 4 for r in client_side)
    assert all(0 < r["wire_bytes_per_image"] < 3 * 224 * 224 * 4 for r in served)
    assert set(report["ratios"]) >= {
        "served_over_limit",
        "served_over_client_side",
        "client_side_bytes_over_served_bytes",
        "served_over_naive_at_16",
    }
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for label in ("served (best) / in-process limit", "limit", "naive", "client-side"):
        assert label in completed.stdout


def test_a_server_that_cannot_start_is_an_error_line_not_a_traceback() -> None:
    """A real failure: the gpu target's classifier needs Triton's onnxruntime backend,
    which the embedded server does not have, so tritonserver cannot load it and is never
    ready."""
    completed = run_tvision(
        "bench", "--quick", "--set", "target=gpu", "--paths", "served", "--concurrency", "1",
        timeout_s=300,
    )  # fmt: skip
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.returncode == EXIT_COULD_NOT_RUN
    # Named when Triton logs it, not after Triton has unloaded the models that did load.
    said = "error: tritonserver could not load model 'efficientnet_lite0_classifier': "
    assert said in completed.stderr, completed.stderr[-2000:]
    assert "unable to find backend library for backend 'onnxruntime'" in completed.stderr


@pytest.mark.parametrize("calls", [1, 117, 123, 234, 1000])
def test_bytes_per_image_are_exact_whatever_the_number_of_calls(calls) -> None:
    """The quick bench's exact check of the client-side tensor's 602112 bytes failed once a
    run made 117 calls: the figure was multiplied by 1/117 instead of divided."""
    from tvision.bench.load import LoadResult
    from tvision.bench.paths import _result

    load = LoadResult(latencies_s=[0.01] * calls, calls=calls, seconds=1.0)
    result = _result("client-side", 1, load, wire_bytes=3 * 224 * 224 * 4 * calls)
    assert result.wire_bytes_per_image == 3 * 224 * 224 * 4
