"""The reference preprocessing: what a model's spec means, computed the plain way.

It decodes at full resolution (no JPEG draft mode) and is kept independent of the serving
code on purpose: comparing the two is how preprocessing skew between training-style
preprocessing and the served ensemble gets caught.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from tvision_export.spec import PreprocessSpec


def reference_preprocess(image_bytes: bytes, spec: PreprocessSpec) -> np.ndarray:
    """Return a float32 array of shape (3, crop, crop), or (crop, crop, 3) for NHWC.

    Raises:
        PIL.UnidentifiedImageError: the bytes are not an image Pillow can read.
    """
    image = Image.open(io.BytesIO(image_bytes))
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale means the same picture at 8 bits: scale it, never clip it.
        wide = np.asarray(image).astype(np.uint32)
        peak = 65535 if image.mode != "I" or wide.max(initial=0) > 255 else 255
        image = Image.fromarray(((wide * 255 + peak // 2) // peak).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    else:
        image = image.convert("RGB")
    width, height = image.size
    ratio = spec.resize_short_px / min(width, height)
    size = (max(spec.crop_px, round(width * ratio)), max(spec.crop_px, round(height * ratio)))
    image = image.resize(size, Image.BILINEAR)
    left = (size[0] - spec.crop_px) // 2
    top = (size[1] - spec.crop_px) // 2
    image = image.crop((left, top, left + spec.crop_px, top + spec.crop_px))
    pixels = np.asarray(image, dtype=np.float32)
    if spec.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    pixels = (pixels / spec.scale - mean) / std
    if spec.layout == "NHWC":
        return np.ascontiguousarray(pixels, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
