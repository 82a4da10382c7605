"""``tvision bench-edge`` runs against the session's repository and reports what the edge
costs. Its figures are timings on a shared machine, so the test checks what is physics,
not speed: with nginx's old 64 KiB window, a 560 KB upload 200 ms away needs at least
eight more round trips than the data needs to flow, whatever the load."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import run_tvision
from tvision.bench.edge import NGINX_DEFAULT_WINDOW

pytestmark = pytest.mark.e2e


def test_bench_edge_reports_throughput_and_the_slow_link(cpu_repository, tmp_path) -> None:
    out = tmp_path / "edge.json"
    done = run_tvision(
        "bench-edge", "--repository", str(cpu_repository), "--concurrency", "2", "--rounds", "1",
        "--duration-s", "1", "--calls", "2", "--delay-ms", "200", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(report["throughput"]) == {"edge", "direct"}
    for rate in report["throughput"].values():
        assert rate["images_per_s"] > 0 and len(rate["rounds_images_per_s"]) == 1
    assert report["edge_over_direct"] == pytest.approx(
        report["throughput"]["edge"]["images_per_s"]
        / report["throughput"]["direct"]["images_per_s"]
    )
    seconds = report["large_image_s"]
    (old,) = [name for name in seconds if "64 KiB" in name]
    (new,) = [name for name in seconds if "256 KiB" in name]
    assert set(seconds) == {"direct", old, new}
    # Each 64 KiB window's worth waits for the acknowledgement of the one before it.
    round_trips = math.ceil(report["large_image_bytes"] / NGINX_DEFAULT_WINDOW) - 1
    assert round_trips >= 8
    assert seconds[old] >= round_trips * report["delay_s"], seconds
    assert "edge / direct throughput:" in done.stdout
