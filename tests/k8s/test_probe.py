"""The Triton container's readiness probe: tvision/readiness.py itself, run with the
shared-memory plan tvision.sizing makes for the target the overlay serves."""

from __future__ import annotations

import pytest

from tests.k8s.rendering import (
    K8S_DIR,
    OVERLAYS,
    config_map_data,
    one,
    render,
    triton_container,
)
from tvision import edge, sizing
from tvision_export.options import ServingOptions

ROOT = K8S_DIR.parent


def test_the_pods_probe_script_is_tvision_readiness() -> None:
    assert (K8S_DIR / "base" / "ready.py").read_text() == (
        ROOT / "tvision" / "readiness.py"
    ).read_text(), "copy tvision/readiness.py to k8s/base/ready.py"


@pytest.mark.parametrize("target", OVERLAYS)
def test_readiness_asks_the_ensemble_and_the_targets_shared_memory_plan(target) -> None:
    documents = render(target)
    container = triton_container(documents)
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "probe"]
    scripts = config_map_data(documents, volumes["probe"]["configMap"]["name"])
    assert scripts["ready.py"] == (ROOT / "tvision" / "readiness.py").read_text()

    command = container["readinessProbe"]["exec"]["command"]
    assert command[:3] == ["python3", "-I", f"{mount['mountPath']}/ready.py"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in command[3:])
    ports = edge.K8S_EDGE_PORTS
    assert (
        flags["url"] == f"http://127.0.0.1:{ports.triton_http}/v2/models/efficientnet_lite0/ready"
    )
    assert "shm-prefix" not in flags  # the pod's regions carry Triton's default names
    serves = "gpu" if "nvidia.com/gpu" in container["resources"]["limits"] else "cpu"
    plan = sizing.plan_for_options(
        ServingOptions(target=serves), edge.EdgeLimits().max_request_bytes,
        tensor_bytes=3 * 224 * 224 * 4, num_classes=1000,
    )  # fmt: skip
    assert int(flags["shm-plan-bytes"]) == plan.total_bytes, serves
