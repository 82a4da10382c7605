"""Triton python-backend model: encoded image bytes -> normalised float32 NCHW tensors.

The exporter copies this file into the model repository as ``<name>_preprocess/<v>/model.py``.
It imports only numpy, Pillow and simplejpeg (the serving image installs all three).
Every preprocessing number comes from the ``preprocess_spec`` config parameter that the
exporter writes from the model's spec; nothing about the model is hard-coded here.

``ImagePreprocessor`` holds all the image work and does not need Triton, so the benchmark's
in-process path and the client-side path run exactly the same code as the server.

Why it is fast (see the README's Performance section for the measurements):
- ``execute`` treats all the requests Triton hands it as one batch: images are decoded one
  by one, then normalised together, one fused multiply-add per channel;
- a JPEG is decoded once, by libjpeg-turbo in strict mode, which also rejects damaged data;
  with a ``draft-Nx`` strategy, at 1/2, 1/4 or 1/8 scale in the DCT domain, never below N
  times the resize target, so the antialiased resize still does most of the downscaling;
  ``exact`` decodes at full size, as the reference does (see the README's fidelity table);
- resizing happens on uint8 pixels, before any float conversion, and only the region the
  center crop keeps is resampled, with its box computed from the original size.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # libjpeg-turbo in strict mode, for damaged JPEG data (see _check_jpeg_data)
    import simplejpeg
except ImportError:  # pragma: no cover - only a repository exported without strict checks
    simplejpeg = None

from . import contract  # the copy beside this file in a repository (see __init__.py)

# Pillow's own bomb check warns or raises at its own thresholds; ours is explicit below.
Image.MAX_IMAGE_PIXELS = None

# MPO (multi-picture JPEG, written by many phone cameras) is read as its primary picture.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# 16-bit (and 32-bit integer) grayscale modes: scaled to 8 bits, never clipped.
_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageRejected(Exception):
    """An image that cannot be turned into a model input; the message goes to the client."""


# How JPEG, PNG, WebP and BMP files begin once base64-encoded, and a data URL's prefix:
# what a client that put the file into JSON as text sends instead of its bytes.
BASE64_IMAGE_PREFIXES = (b"/9j/", b"iVBORw0KGgo", b"UklGR", b"Qk", b"data:image/")


def _not_an_image(data: bytes, where: str) -> str:
    """Why ``data`` is not an image, with a hint when it is base64 text of one."""
    message = (
        f"{where}: not a recognised image ({len(data)} bytes, starts with {data[:8]!r}); "
        "expected JPEG, PNG, WebP or BMP"
    )
    if data.lstrip().startswith(BASE64_IMAGE_PREFIXES):
        message += (
            "; these bytes are base64 text, which Triton passes on undecoded: send the "
            "file's bytes as binary data (tritonclient's binary_data=True, or Triton's "
            "binary tensor extension over HTTP)"
        )
    return message


class ImagePreprocessor:
    """Decode, convert to RGB, resize the short side, center-crop, normalise.

    ``spec`` is the model's preprocessing spec as a dict (``PreprocessSpec`` fields).
    """

    def __init__(
        self,
        spec: dict[str, Any],
        max_image_pixels: int,
        max_image_bytes: int,
        decode: str = "exact",
        max_request_pixels: int | None = None,
        strict_jpeg: bool = False,
    ) -> None:
        self.resize_short_px = int(spec["resize_short_px"])
        self.crop_px = int(spec["crop_px"])
        self.bgr = spec.get("channel_order", "RGB") == "BGR"
        # (pixel / scale - mean) / std  ==  pixel * multiplier + offset, per channel.
        mean = np.asarray(spec["mean"], dtype=np.float32)
        std = np.asarray(spec["std"], dtype=np.float32)
        scale = float(spec.get("scale", 1.0))
        self.multiplier = (1.0 / (scale * std)).astype(np.float32)
        self.offset = (-mean / std).astype(np.float32)
        self.max_image_pixels = max_image_pixels
        if strict_jpeg and simplejpeg is None:
            raise RuntimeError(
                "strict JPEG checks need the simplejpeg package: pip install simplejpeg"
            )
        self.strict_jpeg = strict_jpeg
        # All the images of one request together: one small request cannot buy minutes of CPU.
        self.max_request_pixels = max_request_pixels or max_image_pixels
        self.max_image_bytes = max_image_bytes
        if decode not in contract.DECODE_HEADROOM:
            raise ValueError(
                f"decode strategy must be one of {sorted(contract.DECODE_HEADROOM)}, got {decode!r}"
            )
        self.decode_strategy = decode
        # A reduced decode keeps the short side at least this many times the resize target.
        self.decode_headroom = contract.DECODE_HEADROOM[decode]
        self.channels_last = spec.get("layout", "NCHW") == "NHWC"

    def normalise(self, crops: list[np.ndarray]) -> np.ndarray:
        """Stack uint8 HxWx3 crops and normalise them -> float32 N,3,H,W (or N,H,W,3).

        One fused multiply per channel, written straight into the planar output: about
        ten times faster than transposing, converting and then scaling the whole batch.
        """
        batch = np.stack(crops)
        if self.channels_last:
            if self.bgr:
                batch = batch[..., ::-1]
            channels_last = batch.astype(np.float32)
            channels_last *= self.multiplier
            channels_last += self.offset
            return channels_last
        count, height, width, _ = batch.shape
        pixels = np.empty((count, 3, height, width), dtype=np.float32)
        channels = (2, 1, 0) if self.bgr else (0, 1, 2)
        for out_channel, in_channel in enumerate(channels):
            plane = pixels[:, out_channel]
            np.multiply(
                batch[..., in_channel], self.multiplier[out_channel], out=plane, casting="unsafe"
            )
            plane += self.offset[out_channel]
        return pixels

    def decode(self, data: Any, position: int = 0) -> np.ndarray:
        """One encoded image -> uint8 crop of shape (crop, crop, 3).

        Raises:
            ImageRejected: the image is empty, too large, of an unaccepted format, corrupt
                or truncated; the message names the problem.
        """
        return self._resize_and_crop(*self.load_upright(data, position))

    def load_upright(self, data: Any, position: int = 0) -> tuple[Image.Image, tuple[int, int]]:
        """Decode to an upright RGB (or RGBX) image, reduced in size by the decode strategy,
        and return it with the full-resolution upright size the reference would see.

        Raises:
            ImageRejected: as for ``decode``.
        """
        where = f"image {position}"
        image = self._open_checked(data, where)
        width, height = image.size
        if image.format in _JPEG_FORMATS:
            reduction = self.jpeg_reduction(width, height)
            if self.strict_jpeg and image.mode in _SIMPLEJPEG_MODES:
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
                pixels = _decode_jpeg_strict(bytes(data), (width, height), reduction, where)
                decoded = Image.frombuffer("RGBX", pixels.shape[1::-1], pixels, "raw", "RGBX", 0, 1)
                if orientation in _EXIF_TRANSPOSE:
                    decoded = decoded.transpose(_EXIF_TRANSPOSE[orientation])
                return decoded, ((height, width) if orientation in _SWAPS_AXES else (width, height))
            if self.strict_jpeg:  # CMYK: checked at 1/8 scale, then decoded by Pillow
                _decode_jpeg_strict(bytes(data), image.size, 8, where, colorspace="CMYK")
            if reduction > 1:
                # Pillow picks the largest power of two that keeps the size at or above the
                # request: floor(size / reduction) yields exactly ``reduction`` (ceil may not).
                image.draft("RGB", (width // reduction, height // reduction))
        try:
            image.load()
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(
                f"{where}: corrupt or truncated {image.format} data: {exc}"
            ) from exc
        # The size the reference sees: the full-resolution image, upright.
        upright = (height, width) if orientation in _SWAPS_AXES else (width, height)
        return image, upright

    def _open_checked(self, data: Any, where: str) -> Image.Image:
        """Open an image from its header, checking its size, format and pixel count.

        Raises:
            ImageRejected: as for ``decode``.
        """
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
            raise ImageRejected(_not_an_image(bytes(data), where)) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"{where}: corrupt or truncated image header: {exc}") from exc
        if image.format not in ACCEPTED_FORMATS:
            raise ImageRejected(
                f"{where}: format {image.format} is not accepted; expected JPEG, PNG, WebP or BMP"
            )
        width, height = image.size
        # Checked from the header alone, before a single pixel is decoded.
        if width * height > self.max_image_pixels:
            raise ImageRejected(
                f"{where}: {width}x{height} is {width * height} pixels, above the limit of "
                f"{self.max_image_pixels} pixels"
            )
        if width < 1 or height < 1:
            raise ImageRejected(f"{where}: image has no pixels ({width}x{height})")
        return image

    def check_request_budget(self, items: Any) -> None:
        """Reject a request whose images hold more pixels in all than the budget, from
        their headers alone, before any is decoded.

        Raises:
            ImageRejected: over the budget; the message names it.
        """
        total = 0
        for item in items:
            if not isinstance(item, (bytes, bytearray)) or not item:
                continue  # decode() names these problems, image by image
            try:
                width, height = Image.open(io.BytesIO(item)).size
            except Exception:  # an unreadable header is decode()'s to name
                continue
            if width * height <= self.max_image_pixels:  # decode() names a single bomb
                total += width * height
        if total > self.max_request_pixels:
            raise ImageRejected(
                f"request holds {total} pixels over {len(items)} images, above the per-request "
                f"budget of {self.max_request_pixels} pixels; send fewer or smaller images"
            )

    def jpeg_reduction(self, width: int, height: int) -> int:
        """The DCT-domain scale-down (1, 2, 4 or 8) this strategy decodes a JPEG with."""
        if not self.decode_headroom:
            return 1
        short_side_px = min(width, height)
        for reduction in (8, 4, 2):
            if short_side_px // reduction >= self.decode_headroom * self.resize_short_px:
                return reduction
        return 1

    def _resize_and_crop(self, image: Image.Image, original_size: tuple[int, int]) -> np.ndarray:
        """Resize the short side, then center-crop, as one resample of the crop region.

        Resampling only the source box that the crop keeps gives the same sampling
        positions and filter support as resizing the whole image and cropping afterwards,
        at about half the cost (the pixels the crop throws away are never computed). The
        box is computed on ``original_size``, as the reference does, then mapped into the
        image actually decoded, which a reduced JPEG decode made 2, 4 or 8 times smaller.
        """
        width, height = original_size
        ratio = self.resize_short_px / min(width, height)
        resized_width = max(self.crop_px, round(width * ratio))
        resized_height = max(self.crop_px, round(height * ratio))
        left = (resized_width - self.crop_px) // 2
        top = (resized_height - self.crop_px) // 2
        # Original pixels per resized pixel, then per decoded pixel (libjpeg's 1/n scaling).
        reduction = round(width / image.size[0])
        scale_x = resized_width / width * reduction
        scale_y = resized_height / height * reduction
        box = (
            left / scale_x,
            top / scale_y,
            (left + self.crop_px) / scale_x,
            (top + self.crop_px) / scale_y,
        )
        image = image.resize((self.crop_px, self.crop_px), Image.BILINEAR, box=box)
        return np.asarray(image, dtype=np.uint8)[..., :3]  # RGBX (a strict JPEG decode) to RGB


_EXIF_ORIENTATION = 0x0112
# EXIF orientations 5-8 are rotated by 90 degrees: width and height trade places.
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# What EXIF orientations 2-8 need to stand upright (the table ImageOps.exif_transpose uses).
_T = Image.Transpose
_EXIF_TRANSPOSE = {
    2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
    6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90,
}  # fmt: skip
_SIMPLEJPEG_MODES = frozenset({"RGB", "L"})  # YCbCr, RGB, grayscale; CMYK goes to Pillow


def _decode_jpeg_strict(
    data: bytes, size: tuple[int, int], reduction: int, where: str, colorspace: str = "RGBX"
) -> np.ndarray:
    """Decode a JPEG at 1/``reduction`` scale and reject damaged data, in one pass. RGBX
    is Pillow's own layout for RGB: ``Image.frombuffer`` uses the pixels without a copy.

    libjpeg decodes damaged or truncated data with only a warning, which Pillow does not
    surface; libjpeg-turbo (simplejpeg) in strict mode raises on it. With Pillow's accurate
    IDCT, fancy upsampling and ``Image.draft``'s scale, the pixels are Pillow's, bit for bit
    (a test checks). No decoder detects bit errors that leave a valid JPEG stream. Raises
    ImageRejected, quoting libjpeg, for damaged data.
    """
    # Exactly 1/reduction: a factor of at least ``reduction``, and no less than that size.
    least_width, least_height = -(-size[0] // reduction), -(-size[1] // reduction)
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace, fastdct=False, fastupsample=False, min_height=least_height,
            min_width=least_width, min_factor=reduction, strict=True,
        )  # fmt: skip
    except ValueError as exc:
        raise ImageRejected(f"{where}: damaged JPEG data: {exc}") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK and alpha images all become RGB; alpha over white;
    16-bit grayscale is scaled to 8 bits (``convert`` would clip it to white)."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        wide = np.asarray(image).astype(np.uint32)
        peak = 65535 if image.mode != "I" or wide.max(initial=0) > 255 else 255
        scaled = (wide * 255 + peak // 2) // peak
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def preprocessor_from_config(model_config: dict[str, Any]) -> ImagePreprocessor:
    """Build the preprocessor from a Triton model config (as the JSON Triton passes)."""
    parameters = contract.parameters_of(model_config)
    return ImagePreprocessor(
        spec=json.loads(parameters[contract.PARAM_PREPROCESS_SPEC]),
        max_image_pixels=int(parameters[contract.PARAM_MAX_IMAGE_PIXELS]),
        max_image_bytes=int(parameters[contract.PARAM_MAX_IMAGE_BYTES]),
        decode=parameters[contract.PARAM_DECODE],
        max_request_pixels=int(parameters[contract.PARAM_MAX_REQUEST_PIXELS]),
        strict_jpeg=contract.decode_bool(parameters[contract.PARAM_STRICT_JPEG]),
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # Triton's, only inside Triton

        self.pb_utils = pb_utils
        model_config = json.loads(args["model_config"])
        self.preprocessor = preprocessor_from_config(model_config)
        self.input_name = contract.ENSEMBLE_INPUT
        self.output_name = contract.PREPROCESS_OUTPUT

    def execute(self, requests: list[Any]) -> list[Any]:
        """All the requests Triton hands over are decoded, then normalised as one batch."""
        pb_utils = self.pb_utils
        crops: list[np.ndarray] = []
        outcomes: list[int | str] = []  # images in the request, or the error message
        for request in requests:
            try:
                # Reading the tensor is inside the isolation too: a malformed BYTES tensor
                # (a length prefix past the data) raises here, for its own request only.
                encoded = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                items = encoded.reshape(-1)
                self.preprocessor.check_request_budget(items)
                decoded = [
                    self.preprocessor.decode(item, position) for position, item in enumerate(items)
                ]
            except ImageRejected as exc:
                outcomes.append(str(exc))
                continue
            except Exception as exc:  # one bad request must never fail the others
                outcomes.append(
                    f"cannot read or preprocess the request: {type(exc).__name__}: {exc}"
                )
                continue
            crops.extend(decoded)
            outcomes.append(len(decoded))

        pixels = self.preprocessor.normalise(crops) if crops else None
        responses = []
        start = 0
        for outcome in outcomes:
            if isinstance(outcome, str):
                error = pb_utils.TritonError(outcome, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            assert pixels is not None
            tensor = pb_utils.Tensor(self.output_name, pixels[start : start + outcome])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += outcome
        return responses
