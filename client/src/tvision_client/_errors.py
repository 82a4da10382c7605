"""Errors raised by the SDK.

::

    ClientError                       every error the SDK raises
    ├── InvalidInputError             the server rejected the input (INVALID_ARGUMENT)
    │   └── InvalidImageError         rejected before sending: unreadable, empty or too large
    ├── ModelNotFoundError            no such model on the server (NOT_FOUND)
    ├── ModelNotReadyError            the model exists but is not ready (FAILED_PRECONDITION)
    ├── UnavailableError              no server answered, or it shed load (UNAVAILABLE)
    ├── DeadlineExceededError         the call's deadline passed (DEADLINE_EXCEEDED)
    ├── ResourceExhaustedError        a size or quota limit was hit (RESOURCE_EXHAUSTED)
    ├── AuthenticationError           credentials missing or refused
    └── ServerError                   anything else the server reported

Server errors are mapped by gRPC status code only, never by message text, and the original
``grpc.RpcError`` is always the ``__cause__``.
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """Base class of every error the SDK raises.

    ``code`` is the gRPC status code when the error came from the server or the channel.
    """

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidInputError(ClientError):
    """The server rejected the request's input, e.g. an image it could not decode."""


class InvalidImageError(InvalidInputError):
    """The SDK rejected an image before sending it."""


class ModelNotFoundError(ClientError):
    """The server has no model of that name (or version)."""


class ModelNotReadyError(ClientError):
    """The model is known but not ready to serve."""


class UnavailableError(ClientError):
    """No server could be reached, or the server rejected the request to shed load."""


class DeadlineExceededError(ClientError):
    """The call's deadline, which covers every retry, passed."""


class ResourceExhaustedError(ClientError):
    """A message-size or resource limit was exceeded."""


class AuthenticationError(ClientError):
    """Credentials were missing or refused (UNAUTHENTICATED or PERMISSION_DENIED)."""


class ServerError(ClientError):
    """Any other error reported by the server."""


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.NOT_FOUND: ModelNotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: ModelNotReadyError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
}


def error_class_for(code: grpc.StatusCode) -> type[ClientError]:
    """The most specific ``ClientError`` subclass for a gRPC status code."""
    return _BY_CODE.get(code, ServerError)
