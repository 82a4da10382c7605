"""The guide's steps line up on a fresh cluster: each overlay makes its namespace, the
README's commands use the namespace each overlay deploys into, and the image pin the
guide shows for clusters without the kustomize CLI takes effect."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.k8s.rendering import K8S_DIR, OVERLAYS, by_kind, kubectl, render, triton_container

README = K8S_DIR.parent / "README.md"


def _guide() -> str:
    text = README.read_text()
    start = text.index("## On Kubernetes")
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_makes_the_namespace_it_deploys_into(overlay) -> None:
    documents = render(overlay)
    (namespace,) = by_kind(documents, "Namespace")
    name = namespace["metadata"]["name"]
    namespaced = [d for d in documents if d["kind"] != "Namespace"]
    assert namespaced
    assert {d["metadata"].get("namespace") for d in namespaced} == {name}
    # The file the guide applies on its own, before the Secrets, is this same object.
    alone = yaml.safe_load((K8S_DIR / overlay / "namespace.yaml").read_text())
    assert alone["metadata"]["name"] == name


def test_the_guides_commands_use_each_overlays_namespace() -> None:
    guide = _guide()
    default = re.search(r"^NS=([\w-]+)", guide, re.MULTILINE)
    dev = re.search(r"the dev overlay's: NS=([\w-]+)", guide)
    assert default and dev, "the guide sets NS for prod and names dev's"
    namespaces = {
        overlay: by_kind(render(overlay), "Namespace")[0]["metadata"]["name"]
        for overlay in OVERLAYS
    }
    assert namespaces["overlays/prod"] == namespaces["overlays/onprem"] == default[1]
    assert namespaces["overlays/dev"] == dev[1]
    # Every kubectl command that names a namespace uses $NS, not a written-out one.
    named = re.findall(r"kubectl -n (\S+)", guide)
    assert named and set(named) == {"$NS"}, named


def test_the_guides_image_pin_without_the_kustomize_cli_takes_effect(tmp_path) -> None:
    guide = _guide()
    (block,) = re.findall(r"```yaml\n(images:\n.*?)```", guide, re.DOTALL)
    digest = "sha256:" + "ab" * 32
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    kustomization = copy / "overlays/prod/kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text() + block.replace("sha256:<pushed digest>", digest)
    )
    rendered = subprocess.run(
        [kubectl(), "kustomize", str(copy / "overlays/prod")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    before = triton_container(render("overlays/prod"))["image"]
    assert triton_container(documents)["image"] == f"{before.split(':')[0]}@{digest}"
