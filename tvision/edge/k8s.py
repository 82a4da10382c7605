"""The pod's edge configs: ``render_config`` for the pod's ports and paths, written into
the kustomize tree by ``python -m tvision.edge k8s`` (a test keeps them equal)."""

from __future__ import annotations

from pathlib import Path

from tvision.edge.config import EdgeLimits, EdgePorts, EdgeTLS, render_config

# The pod's edge: Triton on loopback behind it, nginx's files in an emptyDir at /tmp/edge.
K8S_EDGE_PORTS = EdgePorts(grpc=8001, http=8000, health=8003, triton_grpc=18001, triton_http=18000)
K8S_TLS_DIR = Path("/etc/tvision/grpc-tls")
K8S_CONFIGS = {
    # kustomize file (relative to k8s/) -> TLS or not
    "base/edge-nginx.conf": None,
    "components/grpc-tls/edge-nginx.conf": EdgeTLS(
        K8S_TLS_DIR / "tls.crt", K8S_TLS_DIR / "tls.key"
    ),
}


def k8s_config(tls: EdgeTLS | None, limits: EdgeLimits | None = None) -> str:
    """The edge's nginx.conf in the pod (the files K8S_CONFIGS names are this output)."""
    return render_config(
        limits or EdgeLimits(), K8S_EDGE_PORTS, address="0.0.0.0", work_dir="/tmp/edge", tls=tls
    )


def write_k8s_configs(k8s_dir: Path) -> list[Path]:
    """(Re)write the pod's edge configs under ``k8s_dir``; run after changing the limits:
    ``python -m tvision.edge k8s``."""
    written = []
    for relative, tls in K8S_CONFIGS.items():
        path = k8s_dir / relative
        path.write_text(k8s_config(tls), encoding="utf-8")
        written.append(path)
    return written
