"""Turning what application code holds into encoded image bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tvision_client._errors import InvalidImageError

# The file suffixes (lower case) of the image files that tools on the SDK pick from a
# directory to send: the formats the server decodes.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image

    ImageInput = (
        str
        | os.PathLike[str]
        | bytes
        | bytearray
        | memoryview
        | IO[bytes]
        | Image.Image
        | np.ndarray[Any, Any]
    )
else:
    ImageInput = Any


def encode_image(image: ImageInput) -> bytes:
    """Encoded bytes for a path, bytes, a binary file object, a PIL image or an HxWx3 uint8 array.

    Bytes and files are sent as they are, so the server decodes the original encoding.
    PIL images and arrays are encoded losslessly as PNG.

    Raises:
        InvalidImageError: the value is of an unsupported type, the file cannot be read,
            or the array has the wrong shape or dtype.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InvalidImageError(
                f"cannot read image file {path}: {exc.strerror or exc}"
            ) from exc
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidImageError("file-like images must be opened in binary mode")
        return bytes(data)
    type_name = f"{type(image).__module__}.{type(image).__name__}"
    if type_name.startswith("PIL.") and hasattr(image, "save"):
        return _png_bytes(image)
    if type_name == "numpy.ndarray":
        return _array_to_png(image)
    raise InvalidImageError(
        f"unsupported image type {type(image).__name__}: give a path, bytes, a binary file, "
        "a PIL image or an HxWx3 uint8 numpy array"
    )


def _png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _array_to_png(array: Any) -> bytes:
    from PIL import Image

    if array.dtype.name != "uint8" or array.ndim != 3 or array.shape[2] != 3:
        raise InvalidImageError(
            f"numpy images must be HxWx3 uint8 (RGB); got shape {array.shape} dtype {array.dtype}"
        )
    return _png_bytes(Image.fromarray(array, mode="RGB"))
