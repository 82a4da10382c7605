"""The server's image preprocessing, run in-process: formats, modes, EXIF, limits, parity."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tvision_export.reference import reference_preprocess
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC
from tvision_export.triton_models.preprocess import ImagePreprocessor, ImageRejected

SPEC = DEFAULT_SPEC.preprocess
WHITE = (255 - 127) / 128


def make_preprocessor(**overrides) -> ImagePreprocessor:
    options = {"max_image_pixels": 40_000_000, "max_image_bytes": 20_000_000, **overrides}
    spec = {**SPEC.__dict__, "mean": list(SPEC.mean), "std": list(SPEC.std)}
    return ImagePreprocessor(spec, **options)


def encode(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    preprocessor = make_preprocessor()
    return preprocessor.normalise([preprocessor.decode(data)])[0]


def photo() -> Image.Image:
    return Image.open(sample_photo("coffee").path).convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_accepted_formats_decode_to_the_model_input_shape(fmt) -> None:
    out = pixels(encode(photo(), fmt))
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_every_colour_mode_becomes_three_channels(mode) -> None:
    image = photo().convert(mode) if mode != "I;16" else photo().convert("L").convert("I;16")
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = pixels(encode(image, fmt))
    assert out.shape == (3, 224, 224)


def test_grayscale_gives_equal_channels() -> None:
    out = pixels(encode(photo().convert("L"), "PNG"))
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])


def test_transparent_pixels_are_composited_over_white() -> None:
    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))  # fully transparent black
    out = pixels(encode(image, "PNG"))
    assert np.allclose(out, WHITE)


def test_palette_with_transparency_is_composited_over_white() -> None:
    image = Image.new("P", (300, 300), 0)
    image.putpalette([0, 0, 0] * 256)
    out = pixels(encode(image, "PNG", transparency=0))
    assert np.allclose(out, WHITE)


def test_exif_orientation_is_honoured() -> None:
    # Left half red, right half blue; EXIF orientation 6 means "rotate 90° clockwise to view".
    image = Image.new("RGB", (400, 300), (255, 0, 0))
    image.paste((0, 0, 255), (200, 0, 400, 300))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = pixels(encode(image, "PNG"))
    rotated = pixels(encode(image, "PNG", exif=exif.tobytes()))
    # Upright: red on the left. After the 90° turn red is on top, blue at the bottom.
    assert upright[0, 112, 10] > 0.9 and upright[2, 112, 10] < -0.9
    assert rotated[0, 10, 112] > 0.9 and rotated[2, 214, 112] > 0.9


def test_served_preprocessing_matches_the_reference_without_draft() -> None:
    # The server resamples only the crop box; Pillow's 8-bit intermediate can then round a
    # few pixels one grey level differently from resize-then-crop, and never more.
    one_level = 1 / SPEC.std[0]
    for name in ("coffee", "flower", "chelsea", "rocket"):
        data = sample_photo(name).path.read_bytes()
        difference = np.abs(pixels(data) - reference_preprocess(data, SPEC))
        assert difference.max() <= one_level + 1e-6, name
        assert (difference > 1e-6).mean() < 0.05, name


@pytest.mark.parametrize(
    ("size", "strategy", "reduction"),
    [
        ((512, 512), "draft-2x", 1),
        ((683, 512), "draft-2x", 1),
        ((768, 512), "draft-2x", 1),
        ((1365, 1024), "draft-2x", 2),
        ((1365, 1024), "draft-3x", 1),
        ((4032, 3024), "draft-2x", 4),
        ((4032, 3024), "draft-3x", 2),
        ((4032, 3024), "draft-4x", 2),
        ((4032, 3024), "exact", 1),
        ((1024, 1366), "draft-2x", 2),  # portrait: the short side decides
    ],
)
def test_reduced_decode_keeps_its_headroom_and_its_crop_aligned(size, strategy, reduction) -> None:
    """The scale libjpeg really decodes at (read back from the decoded image) is the one the
    strategy promises, including sizes where a rounded-up request would skip it (683x512),
    and the crop stays aligned with the full decode's crop."""
    data = encode(photo().resize(size), "JPEG", quality=90)
    reduced = make_preprocessor(decode=strategy)
    exact = make_preprocessor(decode="exact")
    assert reduced.jpeg_reduction(*size) == reduction
    image, original = reduced.load_upright(data)
    assert original == size
    assert image.size == tuple(math.ceil(side / reduction) for side in size)
    difference = np.abs(
        reduced.normalise([reduced.decode(data)]) - exact.normalise([exact.decode(data)])
    )
    # A box off by one decoded pixel would shift edges by several pixels of the crop.
    assert difference.mean() < 2 / 128, difference.mean()


def test_reduced_decode_of_a_rotated_phone_photo_matches_the_reference_geometry() -> None:
    """A 4032x3024 JPEG stored sideways with EXIF orientation 6, as phone cameras write it."""
    upright = photo().resize((3024, 4032))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)
    reduced = make_preprocessor(decode="draft-3x")
    image, original = reduced.load_upright(data)
    assert original == (3024, 4032) and image.size == (1512, 2016)
    difference = np.abs(
        reduced.normalise([reduced.decode(data)])[0] - reference_preprocess(data, SPEC)
    )
    assert difference.mean() < 2 / 128, difference.mean()


def test_unknown_decode_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="decode strategy must be one of"):
        make_preprocessor(decode="draft")


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's header."""
    real = encode(Image.new("RGB", (1, 1)), "PNG")
    ihdr_data = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr_data
    ihdr = struct.pack(">I", len(ihdr_data)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return real[:8] + ihdr + real[8 + 25 :]


def test_decompression_bomb_is_rejected_from_its_header() -> None:
    with pytest.raises(ImageRejected, match=r"50000x50000 is 2500000000 pixels, above the limit"):
        make_preprocessor().decode(_png_claiming(50_000, 50_000))


def test_limits_are_configurable() -> None:
    small = encode(photo(), "PNG")
    with pytest.raises(ImageRejected, match="above the limit of 1000 pixels"):
        make_preprocessor(max_image_pixels=1000).decode(small)
    with pytest.raises(ImageRejected, match="exceeds the limit of 100 bytes"):
        make_preprocessor(max_image_bytes=100).decode(small)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input"),
        (b"GIF89a" + b"\x00" * 64, "not a recognised image|not accepted"),
        (b"hello world", "not a recognised image"),
    ],
)
def test_bad_input_is_named(data, message) -> None:
    with pytest.raises(ImageRejected, match=message):
        make_preprocessor().decode(data)


def test_truncated_jpeg_is_rejected() -> None:
    data = encode(photo(), "JPEG")
    with pytest.raises(ImageRejected, match="truncated"):
        make_preprocessor().decode(data[: len(data) // 3])


def test_unaccepted_format_is_named() -> None:
    gif = encode(photo(), "GIF")
    with pytest.raises(ImageRejected, match="format GIF is not accepted"):
        make_preprocessor().decode(gif)


def test_bgr_channel_order_swaps_the_planes() -> None:
    image = Image.new("RGB", (300, 300), (255, 0, 0))
    spec = {**SPEC.__dict__, "mean": list(SPEC.mean), "std": list(SPEC.std)}
    rgb = ImagePreprocessor(spec, 10**8, 10**8)
    bgr = ImagePreprocessor({**spec, "channel_order": "BGR"}, 10**8, 10**8)
    data = encode(image, "PNG")
    as_rgb = rgb.normalise([rgb.decode(data)])[0]
    as_bgr = bgr.normalise([bgr.decode(data)])[0]
    assert np.allclose(as_rgb[0], WHITE) and np.allclose(as_bgr[2], WHITE)
    assert np.array_equal(as_rgb[::-1], as_bgr)


def test_crop_box_resize_and_plain_resize_agree_within_one_level() -> None:
    spec = {**SPEC.__dict__, "mean": list(SPEC.mean), "std": list(SPEC.std)}
    from tvision.bench.preprocess import FullImageResize

    fast = ImagePreprocessor(spec, 10**8, 10**8)
    plain = FullImageResize(spec, 10**8, 10**8)
    data = sample_photo("china").path.read_bytes()
    difference = np.abs(fast.decode(data).astype(int) - plain.decode(data).astype(int))
    assert difference.max() <= 1


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "BMP"])
def test_an_image_sent_as_base64_text_is_named_so(image_format) -> None:
    """A client that put the file into JSON as text sends base64: say so, and what to do."""
    import base64

    text = base64.b64encode(encode(photo(), image_format))
    with pytest.raises(ImageRejected, match=r"base64 text.*binary data") as raised:
        make_preprocessor().decode(text)
    assert "not a recognised image" in str(raised.value)
    data_url = b"data:image/jpeg;base64," + base64.b64encode(encode(photo(), "JPEG"))
    with pytest.raises(ImageRejected, match="base64 text"):
        make_preprocessor().decode(data_url)
    # Other bytes that are not an image get no such hint.
    with pytest.raises(ImageRejected) as plain:
        make_preprocessor().decode(b"hello world")
    assert "base64" not in str(plain.value)
