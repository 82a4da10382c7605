"""The served predictions, watched: the classifier's prediction metrics on a real server,
and the quality rules and the dashboard of k8s/components/servicemonitor on a real
Prometheus scraping it.

A quality reference is recorded by ``tvision evaluate --save-reference`` through the
session's server, on a labelled set of sample photos; a version exported with it is
served by a server of its own, which Prometheus (tests/prometheus.py) scrapes each second.
Prometheus loads the PrometheusRule's quality group as shipped but for two numbers: its
1 h windows are shortened to WINDOW_S and its alerts' ``for: 30m`` to 0 s, so the test
takes a minute instead of hours. What is sent is known to the test from the SDK's own
answers; every expected figure is computed from those, never read from the metrics.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import run_tvision
from tests.k8s.rendering import one, render
from tests.labelled import blurred, labelled_set
from tests.prometheus import Prometheus
from tvision.exit_codes import EXIT_OK
from tvision.server import TritonServer, temporary_server
from tvision_client import Client
from tvision_export import contract
from tvision_export.options import ServingOptions
from tvision_export.repository import write_version
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e

# The photos the reference is recorded on, and the traffic "like the reference".
FOLDERS = {
    "espresso": ("coffee", ("orig", "flip", "small")),
    "palace": ("china", ("orig", "small")),
    "daisy": ("flower", ("orig", "flip", "crop")),
}
WINDOW_S = 15
PSI_ALERT = 0.25  # the shipped TvisionClassMixShifted threshold
LOW_CONFIDENCE_MARGIN = 0.2  # the shipped TvisionLowConfidenceRising margin


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return labelled_set(tmp_path_factory.mktemp("reference-set"), FOLDERS)


@pytest.fixture(scope="module")
def reference_file(triton_server, photos, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reference") / "reference.json"
    done = run_tvision(
        "evaluate", "--images", str(photos), "--url", triton_server.grpc_url,
        "--no-reference", "--save-reference", str(path),
    )  # fmt: skip
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    return path


@pytest.fixture(scope="module")
def watched_server(reference_file, default_source, tmp_path_factory) -> Iterator[TritonServer]:
    repository = tmp_path_factory.mktemp("watched") / "model_repository"
    options = ServingOptions(quality_reference=str(reference_file))
    write_version(repository, DEFAULT_SPEC.name, default_source, options)
    with temporary_server(repository) as server:
        yield server


def _quality_rules(work_dir: Path) -> Path:
    """The shipped quality group, its windows and waits shortened (module docstring)."""
    rule = one(render("overlays/prod"), "PrometheusRule")
    (group,) = [group for group in rule["spec"]["groups"] if group["name"] == "tvision.quality"]
    text = yaml.safe_dump({"groups": [group]}, width=1000)
    assert text.count("[1h]") == 4 and text.count("for: 30m") == 2
    path = work_dir / "quality.rules.yaml"
    path.write_text(text.replace("[1h]", f"[{WINDOW_S}s]").replace("for: 30m", "for: 0s"))
    return path


@pytest.fixture(scope="module")
def prometheus(watched_server, tmp_path_factory) -> Iterator[Prometheus]:
    work_dir = tmp_path_factory.mktemp("prometheus")
    target = watched_server.metrics_url.split("//", 1)[1].split("/", 1)[0]
    server = Prometheus(work_dir, target, rule_files=(_quality_rules(work_dir),))
    try:
        yield server
    finally:
        server.stop()


def _by(result: list[dict], label: str) -> dict[str, float]:
    return {series["metric"][label]: float(series["value"][1]) for series in result}


def _classify(server: TritonServer, images: list[bytes]) -> list[tuple[str, float]]:
    with Client(server.grpc_url, timeout_s=60) as client:
        return [(r.top.label, r.top.score) for r in client.classify_batch(images, top_k=1)]


def _reference_set(photos: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(photos.rglob("*.jpg"))]


def test_the_prediction_metrics_count_what_the_server_answered(
    watched_server, prometheus, photos, reference_file
) -> None:
    selector = f'{{model="{DEFAULT_SPEC.name}",version="1"}}'
    # Warmed up (Triton ran the classifier at every warmup batch size) but never asked.
    idle = prometheus.wait_for(f"tvision_top1_probability_count{selector}", bool, 30)
    assert float(idle[0]["value"][1]) == 0.0

    first = _classify(watched_server, _reference_set(photos))
    answers = first + _classify(watched_server, _reference_set(photos))
    reference = json.loads(reference_file.read_text())
    watched = set(reference["class_shares"])
    expected = Counter(label if label in watched else contract.OTHER_CLASS for label, _ in answers)
    count = prometheus.wait_for(
        f"tvision_top1_probability_count{selector}",
        lambda result: result and float(result[0]["value"][1]) == len(answers), 30,
    )  # fmt: skip
    assert count[0]["metric"]["pod"]
    classes = _by(prometheus.query(f"tvision_predictions_total{selector}"), "class")
    assert {name: n for name, n in classes.items() if n} == expected
    assert set(classes) == watched | {contract.OTHER_CLASS}
    (low,) = prometheus.query(f"tvision_low_confidence_total{selector}")
    threshold = ServingOptions().low_confidence
    assert float(low["value"][1]) == sum(score < threshold for _, score in answers)
    buckets = _by(prometheus.query(f"tvision_top1_probability_bucket{selector}"), "le")
    for edge in contract.TOP1_BUCKETS:
        assert buckets[str(edge)] == sum(score <= edge for _, score in answers), edge
    # The reference, as the server exports it: the shares evaluate recorded.
    shares = _by(prometheus.query(f"tvision_reference_class_share{selector}"), "class")
    for label, n in Counter(label for label, _ in first).items():
        assert shares[label] == pytest.approx(n / len(first), abs=1e-6)


def test_a_blurred_camera_raises_the_class_mix_distance_and_both_alerts(
    watched_server, prometheus, photos, tmp_path
) -> None:
    psi = f'tvision:class_mix_psi:1h{{model="{DEFAULT_SPEC.name}"}}'
    low_share = f'tvision:low_confidence_share:rate1h{{model="{DEFAULT_SPEC.name}"}}'
    # Traffic like the reference: the class mix is the reference's.
    like: list[tuple[str, float]] = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        like += _classify(watched_server, _reference_set(photos))
    (steady,) = prometheus.wait_for(psi, bool, 30)
    assert float(steady["value"][1]) < 0.1, steady  # "stable" on the index's usual reading
    assert not prometheus.alerts()

    # The same scenes through a lens out of focus.
    blurry = _reference_set(labelled_set(tmp_path / "blurred", FOLDERS, blurred))
    answers: list[tuple[str, float]] = []
    deadline = time.monotonic() + 6 * WINDOW_S
    while not {
        ("TvisionClassMixShifted", "firing"), ("TvisionLowConfidenceRising", "firing")
    } <= set(prometheus.alerts().items()):  # fmt: skip
        assert time.monotonic() < deadline, (prometheus.alerts(), prometheus.query(psi))
        answers += _classify(watched_server, blurry)
    # Why they fired, from what the SDK was answered: every blurred photo is now a low
    # confidence prediction, and some are predicted as classes the reference never saw.
    assert all(score < ServingOptions().low_confidence for _, score in answers), answers
    assert {label for label, _ in answers} - set(FOLDERS), answers
    threshold = ServingOptions().low_confidence
    like_low = sum(score < threshold for _, score in like) / len(like)
    shifted, low = (float(prometheus.query(q)[0]["value"][1]) for q in (psi, low_share))
    print(
        f"PSI {float(steady['value'][1]):.4f} like the reference, {shifted:.2f} blurred; "
        f"low confidence {like_low:.2f} -> {low:.2f} ({len(answers)} blurred photos)"
    )
    assert shifted > PSI_ALERT and low > like_low + LOW_CONFIDENCE_MARGIN


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the shipped dashboard, as rendered."""
    (config_map,) = [
        document
        for document in render("overlays/prod")
        if document["kind"] == "ConfigMap"
        and document["metadata"]["name"] == "tvision-grafana-dashboard"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["tvision-dashboard.json"])
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_returns_data(watched_server, prometheus) -> None:
    """After the tests above sent traffic: Grafana's variables filled in as Grafana would
    (the namespace Prometheus labels the target with, a rate window of a few scrapes)."""
    queries = _dashboard_queries()
    assert len(queries) >= 12
    titles = {title for title, _ in queries}
    assert {"Latency p50 and p99 (ensemble)", "Failures per second, by step and reason"} <= titles
    empty = []
    for title, expression in queries:
        filled = (
            expression.replace("$namespace", "tvision")
            .replace("$__rate_interval", f"{WINDOW_S}s")
            .replace("$__range", "5m")
        )
        if not prometheus.query(filled):
            empty.append((title, filled))
    assert not empty, empty
