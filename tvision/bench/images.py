"""The benchmark's traffic: real sample photos re-encoded at the sizes real clients send."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

# Pillow's default and a typical camera/web setting.
JPEG_QUALITY = 75


@dataclass(frozen=True)
class BenchImage:
    name: str
    data: bytes


def _encode(path: Path, size: tuple[int, int], image_format: str) -> bytes:
    """Re-encode a photo at ``size``; "PHONE" is a JPEG stored sideways with EXIF
    orientation 6, as phone cameras write it (``size`` is then the stored size)."""
    from PIL import Image

    from tvision_export.samples import phone_jpeg

    buffer = io.BytesIO()
    rgb = Image.open(path).convert("RGB")
    if image_format == "PHONE":
        return phone_jpeg(rgb.resize((size[1], size[0])), JPEG_QUALITY)
    if image_format == "JPEG":
        rgb.resize(size).save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        rgb.resize(size).save(buffer, image_format)
    return buffer.getvalue()


def bench_images() -> list[BenchImage]:
    """Real traffic's sizes, sent in turn: six 640x480 JPEGs, a 512x512 and a 1365x1024
    JPEG, two 1920x1080 JPEGs, a 4032x3024 phone JPEG (EXIF orientation 6) and a 640x480
    PNG."""
    from tvision_export.samples import sample_photos

    photos = sample_photos()
    plan = [(photo, (640, 480), "JPEG") for photo in photos]
    plan.append((photos[1], (512, 512), "JPEG"))
    plan.append((photos[2], (1365, 1024), "JPEG"))
    plan += [(photo, (1920, 1080), "JPEG") for photo in photos[:2]]
    plan.append((photos[4], (4032, 3024), "PHONE"))
    plan.append((photos[0], (640, 480), "PNG"))
    return [
        BenchImage(
            f"{photo.name} {width}x{height} {kind}", _encode(photo.path, (width, height), kind)
        )
        for photo, (width, height), kind in plan
    ]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def images_in(directory: Path) -> list[BenchImage]:
    """The images in ``directory`` (by suffix, sorted by name), sent in turn instead of the
    mix (``--images``).

    Raises:
        ValueError: there is no such directory, or no image in it.
    """
    if not directory.is_dir():
        raise ValueError(f"--images {directory}: no such directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {directory}: no {', '.join(IMAGE_SUFFIXES)} files in it")
    return [BenchImage(path.name, path.read_bytes()) for path in files]
