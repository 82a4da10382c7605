"""The images a run sends: found in a directory or by a glob, read once, and described
for the baseline and the report."""

from __future__ import annotations

import glob
import io
from pathlib import Path

from PIL import Image

from tvision_client import IMAGE_SUFFIXES


def image_paths(source: str) -> list[Path]:
    """The image files in a directory, or matching a glob, in name order.

    Raises:
        FileNotFoundError: nothing matched; the message names what was looked for.
    """
    directory = Path(source)
    if directory.is_dir():
        paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found at {source!r}")
    return paths


def load_images(source: str) -> list[bytes]:
    return [path.read_bytes() for path in image_paths(source)]


def image_mix(source: str) -> dict[str, str]:
    """Name -> "FORMAT WxH, N kB" of each image sent, for the baseline and report."""
    mix = {}
    for path in image_paths(source):
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as image:
                described = f"{image.format} {image.width}x{image.height}"
        except OSError:
            described = "not an image"
        mix[path.name] = f"{described}, {len(data) // 1024} kB"
    return mix
