"""The benchmark's traffic: real sample photos re-encoded at the sizes real clients send."""

from __future__ import annotations

import io
from dataclasses import dataclass

# Pillow's default and a typical camera/web setting.
JPEG_QUALITY = 75


@dataclass(frozen=True)
class BenchImage:
    name: str
    data: bytes


def _encode(path: object, size: tuple[int, int], image_format: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    rgb = Image.open(path).convert("RGB").resize(size)  # type: ignore[arg-type]
    if image_format == "JPEG":
        rgb.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        rgb.save(buffer, image_format)
    return buffer.getvalue()


def bench_images() -> list[BenchImage]:
    """Six 640x480 JPEGs, two 1920x1080 JPEGs and a 640x480 PNG, sent in turn."""
    from tvision_export.samples import sample_photos

    photos = sample_photos()
    plan = [(photo, (640, 480), "JPEG") for photo in photos]
    plan += [(photo, (1920, 1080), "JPEG") for photo in photos[:2]]
    plan.append((photos[0], (640, 480), "PNG"))
    return [
        BenchImage(
            f"{photo.name} {width}x{height} {kind}", _encode(photo.path, (width, height), kind)
        )
        for photo, (width, height), kind in plan
    ]
