"""The autoscaler's metric, evaluated by a real Prometheus scraping a real server.

Prometheus (tests/prometheus.py) scrapes the embedded server's metrics port each second,
with the namespace and pod labels the Prometheus Operator would add. The prometheus-adapter
rule shipped in k8s/components/hpa is filled in the way the adapter fills its template
for one pod, and its query is evaluated through Prometheus' HTTP API: 0 while the server
is idle, finite and rising as the load rises. promtool checks every rule file.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.rendering import K8S_DIR, one, render
from tests.prometheus import NAMESPACE, POD, Prometheus, binary
from tvision.server import TritonServer, edge_limits_for, temporary_server
from tvision_client import Client, UnavailableError
from tvision_export.repository import ModelNames
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e

ADAPTER_RULES = K8S_DIR / "components" / "hpa" / "prometheus-adapter-rules.yaml"


def _adapter_rule() -> dict[str, Any]:
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    return rule


def _adapter_query(rule: dict[str, Any]) -> str:
    """The metricsQuery as the adapter runs it for one pod of the HPA's target."""
    matchers = f'namespace="{NAMESPACE}",pod=~"{POD}"'
    return (
        rule["metricsQuery"].replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")
    )


@pytest.fixture(scope="module")
def idle_server(cpu_repository: Path) -> Iterator[TritonServer]:
    """A server of its own: the session's shared one has traffic from other tests. Its
    edge does not cap requests per client: all the callers come from 127.0.0.1, and they
    must queue in Triton (tests/e2e/test_per_client_limit.py tests the cap)."""
    edge = edge_limits_for(cpu_repository, max_requests_per_client=1024)
    with temporary_server(cpu_repository, edge=edge) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(idle_server: TritonServer, tmp_path_factory) -> Iterator[Prometheus]:
    target = idle_server.metrics_url.split("//", 1)[1].split("/", 1)[0]
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), target)
    try:
        yield server
    finally:
        server.stop()


def _load(server: TritonServer, callers: int, seconds: float) -> int:
    image = sample_photo("coffee").path.read_bytes()
    stop_at = time.monotonic() + seconds
    done = [0] * callers

    def call(index: int) -> None:
        with Client(server.grpc_url, timeout_s=60) as client:
            while time.monotonic() < stop_at:
                try:
                    client.classify(image)
                except UnavailableError:
                    continue  # shed by a full queue: the load is what this test is about
                done[index] += 1

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


def test_the_rule_names_the_exported_models_and_the_hpa_metric() -> None:
    rule = _adapter_rule()
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    query = rule["metricsQuery"]
    for model in (names.intake, names.preprocess, names.classifier):
        assert model.rsplit("_", 1)[1] in query
    assert f'model="{names.ensemble}"' in query
    hpa = one(render("overlays/prod"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"]


def _callers_certain_to_queue(repository: Path) -> tuple[int, int]:
    """Callers enough that most requests must wait in a queue, from the exported config.

    The preprocessing model, the slowest step, runs at most ``instances`` batches at once,
    each of at most its largest preferred size (the batcher never goes past it while it can
    form a preferred batch). With three times that many closed-loop callers, at least two
    thirds of the requests in flight are waiting in a queue at every moment, whatever the
    machine's speed: a slower machine makes each wait longer, not rarer.
    """
    from tvision_export import configs

    names = ModelNames.for_model(DEFAULT_SPEC.name)
    config = configs.parse((repository / names.preprocess / "config.pbtxt").read_text())
    in_service = sum(group.count for group in config.instance_group) * max(
        config.dynamic_batching.preferred_batch_size
    )
    return 3 * in_service, in_service


def test_the_metric_is_zero_idle_and_rises_with_load(
    idle_server, prometheus, cpu_repository
) -> None:
    query = _adapter_query(_adapter_rule())
    # Idle: no request yet. The bare ratio would be NaN here; the rule defines it as 0.
    idle = prometheus.value_after_next_scrapes(query)
    assert idle == 0.0

    # One caller never queues behind another: what it waits is the batchers' queue delay.
    assert _load(idle_server, callers=1, seconds=3) > 0
    light = prometheus.value_after_next_scrapes(query)
    assert math.isfinite(light) and light > 0

    callers, in_service = _callers_certain_to_queue(cpu_repository)
    served = _load(idle_server, callers=callers, seconds=6)
    heavy = prometheus.value_after_next_scrapes(query)
    print(
        f"queue us per request: idle {idle}, 1 caller {light:.0f}, {callers} callers "
        f"{heavy:.0f} ({served} requests; at most {in_service} in service at once)"
    )
    # Not a comparison of two noisy timings: with 1 caller the figure is the batchers'
    # delay (about 2 x 2 ms); with `callers` it is at least (callers - in_service) requests'
    # service time per request, about 200 ms on 2 cores, so the margin is some 50x and
    # the factor of 2 asserted holds even with the light run's samples in the window.
    assert math.isfinite(heavy) and heavy > 2 * light, (light, heavy)


def test_promtool_accepts_every_rule_file(tmp_path) -> None:
    rule = one(render("overlays/prod"), "PrometheusRule")
    rules_file = tmp_path / "tvision.rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    completed = subprocess.run(
        [binary("promtool"), "check", "rules", str(rules_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SUCCESS: 10 rules found" in completed.stdout
