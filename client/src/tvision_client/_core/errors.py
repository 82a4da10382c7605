"""A failed gRPC call as the most specific ``ClientError``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from tvision_client._errors import (
    ClientError,
    DeadlineExceededError,
    ModelNotFoundError,
    error_class_for,
)

if TYPE_CHECKING:  # pragma: no cover
    from tvision_client._core.retry import Deadline


def map_rpc_error(exc: grpc.RpcError, what: str, deadline: Deadline | None = None) -> ClientError:
    """The most specific ``ClientError`` for a failed call; chain it with ``from exc``."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    if code is None:
        return ClientError(f"{what}: {exc}")
    error_class = error_class_for(code)
    message = f"{what}: {details or code.name}"
    if error_class is DeadlineExceededError and deadline is not None:
        message = f"{what}: deadline of {deadline.timeout_s:g} s exceeded ({details or code.name})"
    return error_class(message, code=code)


def not_found_error(model: str, exc: grpc.RpcError) -> ClientError:
    """Triton reports an unknown model as INVALID_ARGUMENT or NOT_FOUND, depending on the call."""
    return ModelNotFoundError(
        f"model {model!r} is not available on the server: {exc.details()}", code=exc.code()
    )
