"""The SDK's public surface and its weight, checked in a clean interpreter."""

from __future__ import annotations

import subprocess
import sys

import tvision_client

DOCUMENTED_NAMES = {
    "AsyncClient",
    "AuthenticationError",
    "Classification",
    "Client",
    "ClientError",
    "DEFAULT_MODEL",
    "DeadlineExceededError",
    "IMAGE_SUFFIXES",
    "InvalidImageError",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "NO_RETRY",
    "Prediction",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RetryStats",
    "ServerError",
    "TLSConfig",
    "UnavailableError",
}


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert set(tvision_client.__all__) == DOCUMENTED_NAMES
    for name in DOCUMENTED_NAMES:
        assert hasattr(tvision_client, name), name


def test_every_error_is_a_client_error() -> None:
    for name in DOCUMENTED_NAMES:
        value = getattr(tvision_client, name)
        if isinstance(value, type) and name.endswith("Error"):
            assert issubclass(value, tvision_client.ClientError), name


def test_importing_the_sdk_loads_no_torch_or_onnx() -> None:
    code = (
        "import sys, tvision_client\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tvision_export') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.strip() == ""
