"""``tvision bench-preprocess``: each preprocessing speed-up against its plain baseline."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from tvision.bench.defaults import PREPROCESS_REPEATS
from tvision.bench.images import bench_images
from tvision.bench.paths import preprocessor
from tvision_export.triton_models.preprocess import ImagePreprocessor


@dataclass
class PreprocessReport:
    cpu_count: int | None
    decode_ms: dict[str, dict[str, float]]  # image -> variant -> ms per image
    normalise_ms: dict[str, float]  # variant -> ms per image
    # The most one request may cost: a 40 MP image of each kind, scaled to the budget.
    request_budget_cpu_s: dict[str, float]
    request_budget_pixels: int


class FullImageResize(ImagePreprocessor):
    """The plain way, as a baseline: resize the whole image, then crop."""

    def _resize_and_crop(self, image: Image.Image, original_size: tuple[int, int]) -> np.ndarray:
        if image.size != original_size:
            raise ValueError("the full-image resize baseline needs the exact decode")
        width, height = image.size
        ratio = self.resize_short_px / min(width, height)
        size = (max(self.crop_px, round(width * ratio)), max(self.crop_px, round(height * ratio)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - self.crop_px) // 2, (size[1] - self.crop_px) // 2
        image = image.crop((left, top, left + self.crop_px, top + self.crop_px))
        return np.asarray(image, dtype=np.uint8)[..., :3]  # RGBX (a strict JPEG decode) to RGB


class TwoPassJpeg(ImagePreprocessor):
    """The way before the single pass, as a baseline: Pillow decodes a JPEG, and simplejpeg
    decodes it once more in strict mode only to check it (build with ``strict_jpeg=False``).

    The check is the one that ran: ``min_factor`` without a minimum size does not reduce the
    decode, so it decoded the whole image (in grayscale)."""

    def load_upright(self, data: Any, position: int = 0) -> tuple[Image.Image, tuple[int, int]]:
        if Image.open(io.BytesIO(data)).format in ("JPEG", "MPO"):
            simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=8, strict=True)
        return super().load_upright(data, position)


def _transpose_then_scale(shipped: ImagePreprocessor, crops: list[np.ndarray]) -> np.ndarray:
    """The obvious way, as a baseline: transpose, convert, then scale the whole batch."""
    pixels = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)
    pixels *= shipped.multiplier.reshape(1, 3, 1, 1)
    pixels += shipped.offset.reshape(1, 3, 1, 1)
    return pixels


def _time_ms(function: Callable[[], object], repeats: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1000.0


def run_preprocess_benchmark(repeats: int = PREPROCESS_REPEATS) -> PreprocessReport:
    """Milliseconds per image for each preprocessing speed-up and its baseline, in one run."""
    from tvision_export.options import ServingOptions
    from tvision_export.spec import DEFAULT_SPEC

    options = ServingOptions()
    shipped = preprocessor(DEFAULT_SPEC, options)
    variants = {
        "shipped": shipped,
        "two JPEG decodes": TwoPassJpeg(
            json.loads(DEFAULT_SPEC.preprocess.to_json()),
            options.max_image_pixels,
            options.max_image_bytes,
            decode=options.decode,
            max_request_pixels=options.max_request_pixels,
        ),
        "exact decode": preprocessor(DEFAULT_SPEC, replace(options, decode="exact")),
        "full-image resize": FullImageResize(
            json.loads(DEFAULT_SPEC.preprocess.to_json()),
            options.max_image_pixels,
            options.max_image_bytes,
            decode="exact",
            strict_jpeg=options.strict_jpeg,
        ),
    }
    images = bench_images()
    decode = {
        image.name: {
            name: _time_ms(lambda p=p, data=image.data: p.decode(data), repeats)
            for name, p in variants.items()
        }
        for image in images
    }
    crops = [shipped.decode(image.data) for image in images[:8]]
    normalise = {
        "shipped (per-channel multiply into planar output)": _time_ms(
            lambda: shipped.normalise(crops), repeats
        )
        / len(crops),
        "transpose, convert, then scale": _time_ms(
            lambda: _transpose_then_scale(shipped, crops), repeats
        )
        / len(crops),
    }
    return PreprocessReport(
        cpu_count=os.cpu_count(),
        decode_ms=decode,
        normalise_ms=normalise,
        request_budget_cpu_s=_request_at_budget_cpu_s(shipped, options.max_request_pixels),
        request_budget_pixels=options.max_request_pixels,
    )


def _request_at_budget_cpu_s(shipped: ImagePreprocessor, budget: int) -> dict[str, float]:
    """CPU seconds to preprocess a request holding ``budget`` pixels, from one 40 MP image
    (the per-image limit) of each kind, within the byte limit, scaled to the budget."""
    from tvision_export.samples import sample_photo

    size = (7300, 5475)  # 39.97 MP
    photo = Image.open(sample_photo("china").path).convert("RGB").resize(size)
    kinds = {
        "photo PNG": (photo, "PNG", {}),
        "zero-filled PNG": (Image.new("RGB", size), "PNG", {}),
        "photo JPEG": (photo, "JPEG", {"quality": 90}),
    }
    costs = {}
    for name, (image, image_format, save_args) in kinds.items():
        buffer = io.BytesIO()
        image.save(buffer, image_format, **save_args)
        started = time.process_time()
        shipped.decode(buffer.getvalue())
        spent = time.process_time() - started
        costs[name] = spent * budget / (size[0] * size[1])
    return costs


def render_preprocess_table(report: PreprocessReport) -> str:
    variants = list(next(iter(report.decode_ms.values())))
    lines = [
        f"preprocessing, ms per image, on {report.cpu_count} CPU cores (one thread)",
        f"{'image':<26}" + "".join(f"{name:>28}" for name in variants),
    ]
    for image, timings in report.decode_ms.items():
        shipped = timings[variants[0]]
        cells = [f"{shipped:.2f}"] + [
            f"{timings[name]:.2f} ({timings[name] / shipped:.1f}x)" for name in variants[1:]
        ]
        lines.append(f"{image:<26}" + "".join(f"{cell:>28}" for cell in cells))
    costs = ", ".join(
        f"{name} {cpu_s:.2f} s" for name, cpu_s in report.request_budget_cpu_s.items()
    )
    lines.append(
        f"one request at the {report.request_budget_pixels / 1e6:.0f} MP budget, CPU seconds "
        f"(from a 40 MP image of each kind): {costs}"
    )
    (shipped_name, shipped_ms), (baseline_name, baseline_ms) = report.normalise_ms.items()
    lines.append(
        f"normalise a batch of 8: {shipped_name} {shipped_ms:.3f} ms/image; "
        f"{baseline_name} {baseline_ms:.3f} ms/image ({baseline_ms / shipped_ms:.1f}x)"
    )
    return "\n".join(lines)
