"""Real photos that ship inside the scikit-image and scikit-learn wheels.

They load offline from site-packages; the packages' download helpers are never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class SamplePhoto:
    name: str
    path: Path


_SKIMAGE_FILES = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")
_SKLEARN_FILES = ("china.jpg", "flower.jpg")


def sample_photos() -> list[SamplePhoto]:
    """The bundled sample photos, in a fixed order.

    Raises:
        FileNotFoundError: a photo is missing from its wheel.
    """
    photos = []
    skimage_dir = resources.files("skimage") / "data"
    sklearn_dir = resources.files("sklearn") / "datasets" / "images"
    for directory, names in ((skimage_dir, _SKIMAGE_FILES), (sklearn_dir, _SKLEARN_FILES)):
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
