"""Shared fixtures: one real export and one real Triton server for the whole session.

Nothing here is mocked: the fixtures export the real pretrained model to ONNX and run the
real ``tritonserver`` binary on free loopback ports, and stop it by process group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tvision.server import ServerPorts, TritonServer
from tvision_export.configs import ServingOptions
from tvision_export.exporter import ExportResult, export_model
from tvision_export.onnx_export import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME
from tvision_export.repository import ClassifierSource, ModelNames
from tvision_export.spec import DEFAULT_SPEC


@pytest.fixture(scope="session")
def cpu_export(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    repository = tmp_path_factory.mktemp("cpu") / "model_repository"
    return export_model(DEFAULT_SPEC, repository, ServingOptions(target="cpu"))


@pytest.fixture(scope="session")
def cpu_repository(cpu_export: ExportResult) -> Path:
    return cpu_export.written.repository


@pytest.fixture(scope="session")
def default_source(cpu_repository: Path) -> ClassifierSource:
    """The exported default classifier, for writing more repositories without re-exporting."""
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    return ClassifierSource(
        onnx_path=cpu_repository / names.classifier / "1" / "model.onnx",
        onnx_input=ONNX_INPUT_NAME,
        onnx_output=ONNX_OUTPUT_NAME,
        input_dims=[3, DEFAULT_SPEC.input_size_px, DEFAULT_SPEC.input_size_px],
        labels=DEFAULT_SPEC.load_labels(),
        preprocess_spec_json=DEFAULT_SPEC.preprocess.to_json(),
    )


@pytest.fixture(scope="session")
def triton_server(cpu_repository: Path) -> Iterator[TritonServer]:
    server = TritonServer(cpu_repository, ServerPorts.free())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def torch_reference():
    """The in-process PyTorch model with the spec's reference preprocessing."""
    from tvision.reference_model import ReferenceClassifier

    return ReferenceClassifier(DEFAULT_SPEC)
