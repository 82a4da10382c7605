"""Shared fixtures: one real export and one real Triton server for the whole session.

Nothing here is mocked: the fixtures export the real pretrained model to ONNX and run the
real ``tritonserver`` binary on free loopback ports, and stop it by process group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tvision.server import TritonServer, temporary_server
from tvision_export.exporter import ExportResult, classifier_source, export_model
from tvision_export.options import ServingOptions
from tvision_export.repository import ClassifierSource
from tvision_export.spec import DEFAULT_SPEC


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the real PyTorch export, through any fixture chain."""
    for item in items:
        if "cpu_export" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.export)


@pytest.fixture(scope="session")
def cpu_export(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    repository = tmp_path_factory.mktemp("cpu") / "model_repository"
    return export_model(DEFAULT_SPEC, repository, ServingOptions(target="cpu"))


@pytest.fixture(scope="session")
def cpu_repository(cpu_export: ExportResult) -> Path:
    return cpu_export.written.repository


@pytest.fixture(scope="session")
def default_source(cpu_export: ExportResult) -> ClassifierSource:
    """The exported default classifier, for writing more repositories without re-exporting."""
    return classifier_source(DEFAULT_SPEC, cpu_export.written.classifier_onnx)


@pytest.fixture(scope="session")
def triton_server(cpu_repository: Path) -> Iterator[TritonServer]:
    with temporary_server(cpu_repository) as server:
        yield server


@pytest.fixture(scope="session")
def torch_reference():
    """The in-process PyTorch model with the spec's reference preprocessing."""
    from tvision.reference_model import ReferenceClassifier

    return ReferenceClassifier(DEFAULT_SPEC)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server on loopback: moto's standalone server stands in for S3 or
    MinIO (MinIO cannot be installed here). Credentials are set in this process's
    environment for the session, as a Kubernetes Secret would set them."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    credentials = {
        "AWS_ACCESS_KEY_ID": "tvision-test-key",
        "AWS_SECRET_ACCESS_KEY": "tvision-test-secret-never-printed",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in credentials}
    os.environ.update(credentials)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
