"""The image limits' defaults as the README states them (`--max-image-pixels` 40 MP,
`--max-image-bytes` 20 MiB, `--max-request-pixels` 48 MP, `--strict-jpeg` the default),
read from a real export's preprocessing config and applied by the preprocessing model
built from that config; and `--no-strict-jpeg` changing what a real damaged photo gets."""

from __future__ import annotations

import argparse
import io
import re
import struct
import zlib
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from tests.helpers import ROOT
from tvision_export import contract
from tvision_export.repository import ModelNames, write_version
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC
from tvision_export.triton_models.preprocess import (
    ImagePreprocessor,
    ImageRejected,
    preprocessor_from_config,
)

NAMES = ModelNames.for_model(DEFAULT_SPEC.name)
UNITS = {"MP": 1_000_000, "MiB": 2**20}


def _readme_limits() -> dict[str, int]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    limits = {}
    for flag in ("--max-image-pixels", "--max-image-bytes", "--max-request-pixels"):
        found = re.search(rf"`{flag}`\s+\(?(\d+) (MP|MiB)\b", readme)
        assert found, flag
        limits[flag] = int(found[1]) * UNITS[found[2]]
    assert "With `--strict-jpeg` (the default)" in readme
    assert "`--no-strict-jpeg` turns it off" in readme
    return limits


def _preprocess_config(repository: Path) -> dict:
    """The preprocessing model's config as the JSON Triton hands its ``initialize``."""
    text = (repository / NAMES.preprocess / "config.pbtxt").read_text()
    message = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _preprocessor(repository: Path) -> ImagePreprocessor:
    return preprocessor_from_config(_preprocess_config(repository))


def _png_header(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: its size is readable from the
    header, and no pixel of that size can be decoded."""
    real = io.BytesIO()
    Image.new("RGB", (1, 1)).save(real, "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    header = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return real.getvalue()[:8] + header + real.getvalue()[8 + 25 :]


def _damaged_photo() -> bytes:
    """The coffee photo as a JPEG with bytes flipped in its entropy-coded data: a valid
    stream that libjpeg decodes with warnings only."""
    jpeg = io.BytesIO()
    Image.open(sample_photo("coffee").path).convert("RGB").save(jpeg, "JPEG", quality=90)
    damaged = bytearray(jpeg.getvalue())
    for index in range(len(damaged) // 2, len(damaged) // 2 + 400, 7):
        damaged[index] ^= 0x5A
    return bytes(damaged)


def test_the_exported_limits_are_the_readmes_defaults(cpu_repository) -> None:
    limits = _readme_limits()
    parameters = contract.parameters_of(_preprocess_config(cpu_repository))
    assert int(parameters[contract.PARAM_MAX_IMAGE_PIXELS]) == limits["--max-image-pixels"]
    assert int(parameters[contract.PARAM_MAX_IMAGE_BYTES]) == limits["--max-image-bytes"]
    assert int(parameters[contract.PARAM_MAX_REQUEST_PIXELS]) == limits["--max-request-pixels"]
    assert contract.decode_bool(parameters[contract.PARAM_STRICT_JPEG]) is True


def test_the_exported_preprocessing_applies_each_limit_at_its_number(cpu_repository) -> None:
    limits = _readme_limits()
    preprocessor = _preprocessor(cpu_repository)
    pixels = limits["--max-image-pixels"]
    # One pixel row over the limit is refused from the header; at the limit the header
    # passes and only the missing pixel data fails.
    width = 8000
    assert pixels % width == 0
    with pytest.raises(ImageRejected, match=f"above the limit of {pixels} pixels"):
        preprocessor.decode(_png_header(width, pixels // width + 1))
    with pytest.raises(ImageRejected, match="corrupt or truncated PNG data"):
        preprocessor.decode(_png_header(width, pixels // width))
    size = limits["--max-image-bytes"]
    with pytest.raises(ImageRejected, match=f"exceeds the limit of {size} bytes"):
        preprocessor.decode(b"\0" * (size + 1))
    with pytest.raises(ImageRejected, match="not a recognised image"):
        preprocessor.decode(b"\0" * size)
    # The request budget: two images that together hold exactly the budget pass; one more
    # row in either goes over it.
    budget = limits["--max-request-pixels"]
    half = budget // 2
    assert half % width == 0 and half <= pixels
    preprocessor.check_request_budget([_png_header(width, half // width)] * 2)
    over = [_png_header(width, half // width), _png_header(width, half // width + 1)]
    with pytest.raises(ImageRejected, match=f"budget of {budget} pixels"):
        preprocessor.check_request_budget(over)


def test_no_strict_jpeg_accepts_the_damaged_photo_that_the_default_refuses(
    cpu_repository, default_source, tmp_path
) -> None:
    from tvision.cli._options import add_serving_arguments, serving_options_from

    parser = argparse.ArgumentParser()
    add_serving_arguments(parser)
    lenient = serving_options_from(parser.parse_args(["--no-strict-jpeg"]))
    repository = tmp_path / "model_repository"
    write_version(repository, DEFAULT_SPEC.name, default_source, lenient)
    damaged = _damaged_photo()
    with pytest.raises(ImageRejected, match="damaged JPEG data"):
        _preprocessor(cpu_repository).decode(damaged)
    crop = _preprocessor(repository).decode(damaged)
    assert crop.shape == (DEFAULT_SPEC.preprocess.crop_px, DEFAULT_SPEC.preprocess.crop_px, 3)
    # The control: the undamaged photo passes both.
    intact = sample_photo("coffee").path.read_bytes()
    for source in (cpu_repository, repository):
        assert _preprocessor(source).decode(intact).shape == crop.shape
