"""The SDK installed alone, as an application would: ``pip install ./client`` into a
fresh virtual environment that sees nothing of this one (no ``--system-site-packages``),
its dependencies from the package registry (this test needs the network), then a real
call to the session's server from that environment, where torch is not importable.

Named for what it needs: it downloads grpcio, tritonclient, numpy and Pillow (about a
minute here)."""

from __future__ import annotations

import subprocess
import sys
import venv

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

CHECK = """
import importlib.util, json, sys
from tvision_client import Client
heavy = [m for m in ("torch", "onnx", "onnxruntime", "tvision", "tvision_export")
         if importlib.util.find_spec(m) is not None]
with Client(sys.argv[1], timeout_s=60) as client:
    top = client.classify(open(sys.argv[2], "rb").read()).top
print(json.dumps({"heavy": heavy, "label": top.label, "prefix": sys.prefix,
                  "loaded_torch": "torch" in sys.modules}))
"""


def test_the_sdk_installed_alone_from_the_registry_classifies_without_torch(
    triton_server, tmp_path
) -> None:
    import json

    from tvision_export.samples import sample_photo

    environment = tmp_path / "sdk-venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(environment)
    python = environment / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir",
         "-c", str(ROOT / "constraints.txt"), str(ROOT / "client")],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    ran = subprocess.run(
        [str(python), "-I", "-c", CHECK, triton_server.grpc_url,
         str(sample_photo("coffee").path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    said = json.loads(ran.stdout.splitlines()[-1])
    assert said["prefix"] == str(environment) != sys.prefix
    assert said["heavy"] == [] and said["loaded_torch"] is False
    assert said["label"] == "espresso"
