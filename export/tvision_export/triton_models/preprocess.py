"""Triton python-backend model: encoded image bytes -> normalised float32 NCHW tensors.

The exporter copies this file into the model repository as ``<name>_preprocess/<v>/model.py``.
It imports only numpy and Pillow, so it runs in the embedded server and in the NGC image.
Every preprocessing number comes from the ``preprocess_spec`` config parameter that the
exporter writes from the model's spec; nothing about the model is hard-coded here.

Why it is fast (see the README's Performance section for the measurements):
- ``execute`` treats all the requests Triton hands it as one batch: images are decoded one
  by one (Pillow releases no work to batch there), then normalised in one numpy expression;
- JPEGs are decoded with ``Image.draft``, which lets libjpeg scale down in the DCT domain
  to the smallest size that is still at least the resize target;
- resizing happens on uint8 pixels, before any float conversion.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb check warns or raises at its own thresholds; ours is explicit below.
Image.MAX_IMAGE_PIXELS = None

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP"})


class ImageRejected(Exception):
    """An image that cannot be turned into a model input; the message goes to the client."""


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model_config = json.loads(args["model_config"])
        parameters = _parameters(model_config)
        spec = json.loads(parameters["preprocess_spec"])
        self.resize_short_px = int(spec["resize_short_px"])
        self.crop_px = int(spec["crop_px"])
        self.bgr = spec.get("channel_order", "RGB") == "BGR"
        # (pixel / scale - mean) / std  ==  pixel * multiplier + offset, per channel.
        mean = np.asarray(spec["mean"], dtype=np.float32)
        std = np.asarray(spec["std"], dtype=np.float32)
        scale = float(spec.get("scale", 1.0))
        self.multiplier = (1.0 / (scale * std)).reshape(1, 3, 1, 1).astype(np.float32)
        self.offset = (-mean / std).reshape(1, 3, 1, 1).astype(np.float32)
        self.max_image_pixels = int(parameters["max_image_pixels"])
        self.max_image_bytes = int(parameters["max_image_bytes"])
        self.use_draft = parameters.get("jpeg_draft", "true") == "true"
        self.input_name = model_config["input"][0]["name"]
        self.output_name = model_config["output"][0]["name"]

    def execute(self, requests: list[Any]) -> list[Any]:
        crops: list[np.ndarray] = []
        outcomes: list[int | str] = []  # images in the request, or the error message
        for request in requests:
            encoded = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            try:
                decoded = [
                    self._decode(item, position)
                    for position, item in enumerate(encoded.reshape(-1))
                ]
            except ImageRejected as exc:
                outcomes.append(str(exc))
                continue
            except Exception as exc:  # one bad request must never fail the others
                outcomes.append(f"cannot preprocess image: {type(exc).__name__}: {exc}")
                continue
            crops.extend(decoded)
            outcomes.append(len(decoded))

        pixels = self._normalise(crops) if crops else None
        responses = []
        start = 0
        for outcome in outcomes:
            if isinstance(outcome, str):
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[],
                        error=pb_utils.TritonError(outcome, pb_utils.TritonError.INVALID_ARG),
                    )
                )
                continue
            assert pixels is not None
            tensor = pb_utils.Tensor(self.output_name, pixels[start : start + outcome])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += outcome
        return responses

    def _normalise(self, crops: list[np.ndarray]) -> np.ndarray:
        batch = np.stack(crops)  # N, H, W, 3 uint8
        if self.bgr:
            batch = batch[..., ::-1]
        pixels = batch.transpose(0, 3, 1, 2).astype(np.float32)
        pixels *= self.multiplier
        pixels += self.offset
        return pixels

    def _decode(self, data: Any, position: int) -> np.ndarray:
        where = f"image {position}"
        if not isinstance(data, (bytes, bytearray)):
            raise ImageRejected(f"{where}: expected encoded image bytes, got {type(data).__name__}")
        if len(data) == 0:
            raise ImageRejected(
                f"{where}: empty input (0 bytes); send an encoded JPEG, PNG, WebP or BMP"
            )
        if len(data) > self.max_image_bytes:
            raise ImageRejected(
                f"{where}: {len(data)} bytes exceeds the limit of {self.max_image_bytes} bytes"
            )
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as exc:
            raise ImageRejected(
                f"{where}: not a recognised image ({len(data)} bytes, starts with "
                f"{bytes(data[:8])!r}); expected JPEG, PNG, WebP or BMP"
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"{where}: corrupt or truncated image header: {exc}") from exc
        if image.format not in ACCEPTED_FORMATS:
            raise ImageRejected(
                f"{where}: format {image.format} is not accepted; expected JPEG, PNG, WebP or BMP"
            )
        width, height = image.size
        if width * height > self.max_image_pixels:
            raise ImageRejected(
                f"{where}: {width}x{height} is {width * height} pixels, above the limit of "
                f"{self.max_image_pixels} pixels"
            )
        if width < 1 or height < 1:
            raise ImageRejected(f"{where}: image has no pixels ({width}x{height})")
        if self.use_draft and image.format == "JPEG":
            ratio = self.resize_short_px / min(width, height)
            # draft() keeps the decoded size at or above the request, so quality is kept.
            image.draft("RGB", (math.ceil(width * ratio), math.ceil(height * ratio)))
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(
                f"{where}: corrupt or truncated {image.format} data: {exc}"
            ) from exc
        return self._resize_and_crop(image)

    def _resize_and_crop(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        ratio = self.resize_short_px / min(width, height)
        resized_width = max(self.crop_px, round(width * ratio))
        resized_height = max(self.crop_px, round(height * ratio))
        image = image.resize((resized_width, resized_height), Image.BILINEAR)
        left = (resized_width - self.crop_px) // 2
        top = (resized_height - self.crop_px) // 2
        image = image.crop((left, top, left + self.crop_px, top + self.crop_px))
        return np.asarray(image, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK and alpha images all become RGB; alpha over white."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        return image.convert("RGB")
    return image
