"""Labelled photo sets in the ImageFolder layout, made from the bundled sample photos."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

from tvision_export.samples import sample_photo

VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "orig": lambda image: image,
    "flip": ImageOps.mirror,
    "small": lambda image: image.resize((image.width // 2, image.height // 2)),
    "crop": lambda image: image.crop(
        (image.width // 10, image.height // 10, image.width * 9 // 10, image.height * 9 // 10)
    ),
}


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def blurred(image: Image.Image) -> Image.Image:
    """A photo as a camera out of focus takes it (a Gaussian blur of radius 12 px)."""
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(12))


def labelled_set(
    root: Path,
    folders: Mapping[str, tuple[str, tuple[str, ...]]],
    degrade: Callable[[Image.Image], Image.Image] = lambda image: image,
) -> Path:
    """``root/<folder>/<photo>-<variant>.jpg`` for each folder's (sample photo, variants)."""
    for folder, (photo, variants) in folders.items():
        (root / folder).mkdir(parents=True)
        image = Image.open(sample_photo(photo).path)
        for name in variants:
            variant = degrade(VARIANTS[name](image))
            (root / folder / f"{photo}-{name}.jpg").write_bytes(jpeg(variant))
    return root
