"""The Triton models load their shared code one way, in the package and in a repository.

``from . import contract`` is the package's ``tvision_export.contract`` here, and the copy
beside ``model.py`` in a written repository, imported as Triton imports a model
(``<version>.model``, with the model's directory on ``sys.path``). Neither needs Triton's
``triton_python_backend_utils`` at import; the end-to-end tests run them inside Triton.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tvision_export import contract
from tvision_export.options import ServingOptions
from tvision_export.repository import ClassifierSource, write_version
from tvision_export.spec import DEFAULT_SPEC

MODULES = ("intake", "preprocess", "classifier_onnxruntime")

# Imports a written model.py as Triton's python backend does, with the exporter's package
# made unimportable, and prints the file its ``contract`` came from.
_IMPORT_AS_TRITON = """
import importlib, sys
sys.modules["tvision_export"] = None
sys.path.insert(0, sys.argv[1])
model = importlib.import_module(sys.argv[2] + ".model")
assert hasattr(model, "TritonPythonModel")
print(model.contract.__file__)
"""


@pytest.mark.parametrize("name", MODULES)
def test_each_model_imports_outside_triton_with_the_packages_contract(name) -> None:
    module = importlib.import_module(f"tvision_export.triton_models.{name}")
    assert module.contract is contract
    assert "triton_python_backend_utils" not in sys.modules


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_in_a_repository_each_model_reads_the_contract_beside_it(tmp_path, target) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"only copied, never loaded here")
    spec = DEFAULT_SPEC
    source = ClassifierSource(
        onnx_path=onnx,
        onnx_input=contract.ONNX_INPUT,
        onnx_output=contract.ONNX_OUTPUT,
        input_dims=list(spec.input_dims),
        labels=[f"class {index}" for index in range(1000)],
        preprocess_spec_json=spec.preprocess.to_json(),
        warmup_image=b"\xff\xd8 an encoded photo",
    )
    repository = tmp_path / "model_repository"
    written = write_version(repository, spec.name, source, ServingOptions(target=target))
    models = sorted(repository.glob(f"*/{written.version}/{contract.MODEL_PY_FILE}"))
    expected = 3 if target == "cpu" else 2  # the gpu classifier is onnxruntime_onnx
    assert len(models) == expected
    for model_py in models:
        version_dir = model_py.parent
        completed = subprocess.run(
            [sys.executable, "-c", _IMPORT_AS_TRITON, str(version_dir.parent), version_dir.name],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        assert Path(completed.stdout.strip()) == version_dir / contract.CONTRACT_FILE
