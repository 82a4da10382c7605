"""An error about an image the caller passed as a path names the file; one about bytes,
a file object or an array keeps the server's name for it, its position (``image 0``)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tvision_client import InvalidImageError, InvalidInputError, UnavailableError
from tvision_client._core import check_image_size, image_name, naming_the_file

# What Triton's ensemble answers for undecodable bytes (each request holds one image).
SERVER_MESSAGE = (
    "classify with 'efficientnet_lite0': in ensemble 'efficientnet_lite0', "
    "image 0: not a recognised image (11 bytes; JPEG, PNG, WebP and BMP are accepted)"
)


def test_a_path_is_named_by_its_file() -> None:
    assert image_name(Path("photos/cat.jpg")) == "image file photos/cat.jpg"
    assert image_name("cat.jpg") == "image file cat.jpg"
    assert image_name(b"\xff\xd8", 3) == "image 3"


def test_a_server_rejection_of_a_file_names_the_file() -> None:
    cause = grpc.RpcError()
    error = InvalidInputError(SERVER_MESSAGE, code=grpc.StatusCode.INVALID_ARGUMENT)
    error.__cause__ = cause
    named = naming_the_file(error, Path("holiday/notes.jpg"))
    assert type(named) is InvalidInputError and named.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image file holiday/notes.jpg: not a recognised image" in str(named)
    assert "image 0" not in str(named) and named.__cause__ is cause


@pytest.mark.parametrize("image", [b"not an image", bytearray(b"xx"), object()])
def test_a_rejection_of_bytes_keeps_the_position(image: object) -> None:
    error = InvalidInputError(SERVER_MESSAGE)
    assert naming_the_file(error, image) is error


def test_only_input_errors_are_renamed() -> None:
    error = UnavailableError("classify with 'm': image 0 is far away")
    assert naming_the_file(error, Path("a.jpg")) is error


def test_a_message_without_a_position_gets_the_file_in_front() -> None:
    named = naming_the_file(InvalidInputError("bad input"), "a.jpg")
    assert str(named) == "image file a.jpg: bad input"


def test_the_size_check_names_the_file_or_the_position() -> None:
    with pytest.raises(InvalidImageError, match=r"^image file big\.jpg is 11 bytes, over"):
        check_image_size(b"x" * 11, image_name(Path("big.jpg")), 10)
    with pytest.raises(InvalidImageError, match=r"^image 0 is 11 bytes, over"):
        check_image_size(b"x" * 11, image_name(b"x" * 11), 10)
