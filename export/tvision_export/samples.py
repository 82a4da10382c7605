"""Real photos that ship inside the scikit-image and scikit-learn wheels, and the one
re-encoding that both the benchmark's traffic and the fidelity set make of them: a phone
photo stored sideways.

They load offline from site-packages; the packages' download helpers are never used.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class SamplePhoto:
    name: str
    path: Path


# The sample photos, by wheel, in a fixed order (the benchmark's traffic picks by position).
_SKIMAGE_FILES = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")
_SKLEARN_FILES = ("china.jpg", "flower.jpg")
# One more photo in scikit-image's wheel, in the fidelity set only (``bundled_photos``).
_MORE_SKIMAGE_FILES = ("motorcycle_left.png",)

_EXIF_ORIENTATION = 0x0112


def sample_photos() -> list[SamplePhoto]:
    """The bundled sample photos, in a fixed order.

    Raises:
        FileNotFoundError: a photo is missing from its wheel.
    """
    return _photos(_SKIMAGE_FILES, _SKLEARN_FILES)


def bundled_photos() -> list[SamplePhoto]:
    """Every photo used from the wheels: the sample photos and one more, in a fixed order.

    Raises:
        FileNotFoundError: a photo is missing from its wheel.
    """
    return _photos(_SKIMAGE_FILES + _MORE_SKIMAGE_FILES, _SKLEARN_FILES)


def _photos(skimage_files: tuple[str, ...], sklearn_files: tuple[str, ...]) -> list[SamplePhoto]:
    photos = []
    skimage_dir = resources.files("skimage") / "data"
    sklearn_dir = resources.files("sklearn") / "datasets" / "images"
    for directory, names in ((skimage_dir, skimage_files), (sklearn_dir, sklearn_files)):
        for file_name in names:
            path = Path(str(directory / file_name))
            if not path.is_file():
                raise FileNotFoundError(f"sample photo {file_name} is missing at {path}")
            photos.append(SamplePhoto(name=Path(file_name).stem, path=path))
    return photos


def sample_photo(name: str) -> SamplePhoto:
    """One sample photo by its stem, e.g. ``"coffee"``.

    Raises:
        KeyError: no sample photo has that name.
    """
    for photo in sample_photos():
        if photo.name == name:
            return photo
    raise KeyError(f"no sample photo named {name!r}")


def phone_jpeg(upright: Image.Image, quality: int) -> bytes:
    """An upright photo as phone cameras store it: a JPEG of the pixels turned sideways,
    with EXIF orientation 6 (turn 90 degrees clockwise to view).

    ``quality`` is the caller's: each photo set encodes all its JPEGs at one quality (the
    benchmark's traffic at 75, the fidelity set at 90), and the README's performance
    figures and fidelity table were measured with those sets as they are.
    """
    from PIL import Image

    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = 6
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=quality, exif=exif)
    return buffer.getvalue()
