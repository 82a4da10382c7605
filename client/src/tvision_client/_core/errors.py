"""A failed gRPC call as the most specific ``ClientError``."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import grpc

from tvision_client._errors import (
    ClientError,
    DeadlineExceededError,
    InvalidInputError,
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


def image_name(image: Any, position: int = 0) -> str:
    """How an error names an image: the file, when the caller passed a path; else its
    position in the request, as the server names it (``image 0``)."""
    if isinstance(image, (str, os.PathLike)):
        return f"image file {os.fspath(image)}"
    return f"image {position}"


def naming_the_file(error: ClientError, image: Any) -> ClientError:
    """``error`` with the server's ``image 0`` replaced by the file the caller passed, for
    an input error about an image given as a path; any other error as it is."""
    if not isinstance(error, InvalidInputError) or not isinstance(image, (str, os.PathLike)):
        return error
    message, found = re.subn(r"\bimage 0\b", lambda _: image_name(image), str(error), count=1)
    if not found:
        message = f"{image_name(image)}: {message}"
    renamed = type(error)(message, code=error.code)
    renamed.__cause__ = error.__cause__
    return renamed
