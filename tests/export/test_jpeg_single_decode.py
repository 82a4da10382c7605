"""The strict JPEG path decodes once: libjpeg-turbo (simplejpeg, strict mode) both checks the
data and gives the pixels served, which are Pillow's decode bit for bit, at every DCT scale."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from tvision_export.samples import bundled_photos, phone_jpeg
from tvision_export.spec import DEFAULT_SPEC
from tvision_export.triton_models import preprocess
from tvision_export.triton_models.preprocess import ImagePreprocessor, ImageRejected

SPEC = DEFAULT_SPEC.preprocess


def _preprocessor(strict: bool, decode: str) -> ImagePreprocessor:
    spec = {**SPEC.__dict__, "mean": list(SPEC.mean), "std": list(SPEC.std)}
    return ImagePreprocessor(spec, 40_000_000, 20_000_000, decode=decode, strict_jpeg=strict)


def _jpeg(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save_args)
    return buffer.getvalue()


def _photo(size: tuple[int, int]) -> Image.Image:
    return Image.open(bundled_photos()[1].path).convert("RGB").resize(size)


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg(image, quality=90, exif=exif.tobytes())


def _mpo(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "MPO", save_all=True, append_images=[image.resize((320, 240))])
    return buffer.getvalue()


# Real photos as clients send them: web sizes, camera sizes (each DCT scale), the ways JPEG
# encoders lay out the data, grayscale, a multi-picture file, and all eight EXIF orientations.
JPEGS = {
    "512x512": lambda: _jpeg(_photo((512, 512)), quality=90),
    "1920x1080": lambda: _jpeg(_photo((1920, 1080)), quality=90),
    "1365x1024 progressive": lambda: _jpeg(_photo((1365, 1024)), progressive=True),
    "2049x1537 4:4:4": lambda: _jpeg(_photo((2049, 1537)), subsampling=0, quality=95),
    "1203x901 4:2:2 restart markers": lambda: _jpeg(
        _photo((1203, 901)), subsampling=1, restart_marker_blocks=2
    ),
    "1301x977 grayscale": lambda: _jpeg(_photo((1301, 977)).convert("L")),
    "1600x1200 MPO": lambda: _mpo(_photo((1600, 1200))),
    "4032x3024 phone, orientation 6": lambda: phone_jpeg(_photo((3024, 4032)), quality=90),
    **{
        f"1201x901 orientation {value}": lambda value=value: _with_orientation(
            _photo((1201, 901)), value
        )
        for value in range(1, 9)
    },
}


@pytest.mark.parametrize("decode", ["exact", "draft-2x", "draft-3x", "draft-4x"])
def test_the_strict_single_decode_gives_pillows_pixels_bit_for_bit(decode) -> None:
    strict, pillow = _preprocessor(True, decode), _preprocessor(False, decode)
    reductions = set()
    for name, make in JPEGS.items():
        data = make()
        image, upright = strict.load_upright(data)
        expected, expected_upright = pillow.load_upright(data)
        assert upright == expected_upright, name
        assert np.array_equal(np.asarray(image)[..., :3], np.asarray(expected)), name
        assert np.array_equal(strict.decode(data), pillow.decode(data)), name
        reductions.add(strict.jpeg_reduction(*Image.open(io.BytesIO(data)).size))
    # The scales these sizes reach (short side // scale >= headroom x 256 px); 1/8 needs a
    # short side of 4096 px, and the CMYK check below decodes at 1/8.
    expected = {"exact": {1}, "draft-2x": {1, 2, 4}, "draft-3x": {1, 2}, "draft-4x": {1, 2}}
    assert reductions == expected[decode]


class _Spy:
    """Counts the real decoders' calls (they still run): simplejpeg's, and Pillow's pixel
    decodes, with the size simplejpeg decoded at."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.simplejpeg_sizes: list[tuple[int, int]] = []
        self.pillow_loads = 0
        real_decode, real_load = preprocess.simplejpeg.decode_jpeg, ImageFile.ImageFile.load

        def decode_jpeg(*args, **kwargs):
            pixels = real_decode(*args, **kwargs)
            self.simplejpeg_sizes.append(pixels.shape[1::-1])
            return pixels

        def load(image):
            if getattr(image, "tile", None):  # pixels still to decode
                self.pillow_loads += 1
            return real_load(image)

        monkeypatch.setattr(preprocess.simplejpeg, "decode_jpeg", decode_jpeg)
        monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_a_jpeg_is_decoded_once_at_the_strategys_scale(monkeypatch) -> None:
    data = _jpeg(_photo((4032, 3024)), quality=90)
    spy = _Spy(monkeypatch)
    _preprocessor(True, "draft-3x").decode(data)
    assert spy.simplejpeg_sizes == [(2016, 1512)] and spy.pillow_loads == 0


def test_a_cmyk_jpeg_is_checked_at_one_eighth_scale_then_decoded_by_pillow(monkeypatch) -> None:
    data = _jpeg(_photo((1600, 1200)).convert("CMYK"))
    spy = _Spy(monkeypatch)
    crop = _preprocessor(True, "draft-3x").decode(data)
    assert spy.simplejpeg_sizes == [(200, 150)] and spy.pillow_loads == 1
    assert np.array_equal(crop, _preprocessor(False, "draft-3x").decode(data))


@pytest.mark.parametrize("cmyk", [False, True], ids=["ycbcr", "cmyk"])
def test_damaged_and_truncated_jpegs_are_named_on_both_paths(cmyk) -> None:
    photo = _photo((1024, 768))
    data = _jpeg(photo.convert("CMYK") if cmyk else photo, quality=90)
    damaged = bytearray(data)
    for index in range(len(damaged) // 2, len(damaged) // 2 + 400, 7):
        damaged[index] ^= 0x5A
    strict = _preprocessor(True, "draft-3x")
    with pytest.raises(ImageRejected, match=r"image 0: damaged JPEG data: .+"):
        strict.decode(bytes(damaged))
    with pytest.raises(ImageRejected, match=r"image 3: damaged JPEG data: .+"):
        strict.decode(data[: len(data) * 2 // 3], position=3)
