"""``python -m tvision.edge k8s``: rewrite the pod's edge configs after changing the limits."""

import sys
from pathlib import Path

from tvision.edge.k8s import write_k8s_configs

if __name__ == "__main__":  # pragma: no cover - a maintainer's command, tested through k8s
    if sys.argv[1:] != ["k8s"]:
        sys.exit("usage: python -m tvision.edge k8s")
    for path in write_k8s_configs(Path(__file__).resolve().parents[2] / "k8s"):
        print(f"wrote {path}")
