"""tvision client SDK: classify images on a tvision (Triton) deployment over gRPC.

Example::

    from tvision_client import Client

    with Client("localhost:8001") as client:
        result = client.classify("cat.jpg", top_k=5)
        print(result.top.label, result.top.score)
"""

from tvision_client._async import AsyncClient
from tvision_client._core.defaults import DEFAULT_MODEL
from tvision_client._errors import (
    AuthenticationError,
    ClientError,
    DeadlineExceededError,
    InvalidImageError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ResourceExhaustedError,
    ServerError,
    UnavailableError,
)
from tvision_client._images import IMAGE_SUFFIXES
from tvision_client._sync import Client
from tvision_client._types import (
    NO_RETRY,
    Classification,
    ModelInfo,
    Prediction,
    RetryPolicy,
    RetryStats,
    TLSConfig,
)

__all__ = [
    "DEFAULT_MODEL",
    "IMAGE_SUFFIXES",
    "NO_RETRY",
    "AsyncClient",
    "AuthenticationError",
    "Classification",
    "Client",
    "ClientError",
    "DeadlineExceededError",
    "InvalidImageError",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "Prediction",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RetryStats",
    "ServerError",
    "TLSConfig",
    "UnavailableError",
]

__version__ = "0.1.0"
