"""Triton python-backend model: the DALI path's first step, one request at a time.

A DALI decoder fails its whole batch on one damaged image, and the DALI model batches
requests together. So every image is checked here, alone, before it can reach a DALI batch:
the same checks the python preprocessing makes (empty, oversized, unaccepted, corrupt or
truncated data, the per-image and per-request pixel budgets), with the same messages. A JPEG
is checked by a strict libjpeg-turbo decode at 1/8 scale (about a tenth of a full decode's
work: README, "The DALI path"); any other format is decoded by Pillow.

What passes goes on as four tensors per image, the inputs of ``dali.py``'s pipeline:
the encoded bytes (zero-padded to the request's longest), and the geometry the reference
preprocessing gives the image, computed here from its header exactly as the reference
computes it: its upright size, its resized size (height, width) and the crop window's
relative position.

This file is copied into the repository as ``<name>_intake/<v>/model.py``, with
``preprocess.py`` and ``contract.py`` beside it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from PIL import Image

from . import contract, preprocess  # the copies beside this file in a repository

ImageRejected = preprocess.ImageRejected

# What the DALI decoder turns into the reference's RGB without help: 8-bit colour or grey,
# and palettes without transparency. The reference composites alpha over white and scales
# 16-bit grey; DALI does neither, so those images are refused with a message saying so.
_DALI_MODES = frozenset({"RGB", "L", "P"})
# An image's upright (height, width), resized (height, width) and crop position (y, x).
Geometry = tuple[np.ndarray, np.ndarray, np.ndarray]


class DaliIntake:
    """Check encoded images and compute each one's resize and crop, as the reference does."""

    def __init__(self, preprocessor: preprocess.ImagePreprocessor) -> None:
        self.preprocessor = preprocessor

    def check(self, data: Any, position: int = 0) -> Geometry:
        """One encoded image -> its upright and resized (height, width) and its crop
        position (y, x) in [0, 1].

        Raises:
            ImageRejected: the image is empty, too large, of an unaccepted format or mode,
                corrupt or truncated; the message names the problem.
        """
        where = f"image {position}"
        image = self.preprocessor._open_checked(data, where)
        self._check_mode(image, where)
        width, height = image.size
        if image.format in preprocess._JPEG_FORMATS:
            preprocess._decode_jpeg_strict(bytes(data), (width, height), 8, where)
        else:
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise ImageRejected(
                    f"{where}: corrupt or truncated {image.format} data: {exc}"
                ) from exc
        orientation = image.getexif().get(preprocess._EXIF_ORIENTATION, 1)
        if orientation in preprocess._SWAPS_AXES:
            width, height = height, width
        return self.geometry(width, height)

    def geometry(self, width: int, height: int) -> Geometry:
        """The upright ``width`` x ``height`` image's size, the reference's resize of it, and
        where its center crop starts, as the fractions of the slack DALI's crop positions
        are."""
        crop = self.preprocessor.crop_px
        ratio = self.preprocessor.resize_short_px / min(width, height)
        resized_width = max(crop, round(width * ratio))
        resized_height = max(crop, round(height * ratio))
        left = (resized_width - crop) // 2
        top = (resized_height - crop) // 2
        size = np.array([resized_height, resized_width], dtype=np.float32)
        position = np.array(
            [top / max(1, resized_height - crop), left / max(1, resized_width - crop)],
            dtype=np.float32,
        )
        return np.array([height, width], dtype=np.float32), size, position

    def _check_mode(self, image: Image.Image, where: str) -> None:
        mode = image.mode
        if image.format in preprocess._JPEG_FORMATS and mode not in ("RGB", "L"):
            raise ImageRejected(
                f"{where}: {mode} JPEGs are not accepted by this model's DALI preprocessing "
                "(it decodes YCbCr and grayscale JPEGs); send it as an RGB JPEG, or export "
                "with --preprocess python"
            )
        if mode not in _DALI_MODES or "transparency" in image.info:
            raise ImageRejected(
                f"{where}: {image.format} in mode {mode} (alpha or 16-bit) is not accepted by "
                "this model's DALI preprocessing, which cannot composite alpha or scale 16-bit "
                "grey as the model's reference does; send it without alpha at 8 bits, or "
                "export with --preprocess python"
            )

    def batch(self, items: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A request's images -> (encoded, zero-padded to the longest; upright sizes;
        resized sizes; crop positions), one row per image.

        Raises:
            ImageRejected: any image fails ``check``, or the request is over its budget.
        """
        items = list(items)
        self.preprocessor.check_request_budget(items)
        checked = [self.check(item, position) for position, item in enumerate(items)]
        longest = max(len(item) for item in items)
        encoded = np.zeros((len(items), longest), dtype=np.uint8)
        for row, item in enumerate(items):
            encoded[row, : len(item)] = np.frombuffer(item, dtype=np.uint8)
        upright, sizes, positions = (np.stack(column) for column in zip(*checked, strict=True))
        return encoded, upright, sizes, positions


def intake_from_config(model_config: dict[str, Any]) -> DaliIntake:
    """The intake a Triton model config (as the JSON Triton passes) describes."""
    return DaliIntake(preprocess.preprocessor_from_config(model_config))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # Triton's, only inside Triton

        self.pb_utils = pb_utils
        self.intake = intake_from_config(json.loads(args["model_config"]))

    def execute(self, requests: list[Any]) -> list[Any]:
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, contract.ENSEMBLE_INPUT)
                encoded, upright, sizes, positions = self.intake.batch(
                    tensor.as_numpy().reshape(-1)
                )
            except ImageRejected as exc:
                responses.append(_error(pb_utils, str(exc)))
                continue
            except Exception as exc:  # one bad request must never fail the others
                message = f"cannot read or check the request: {type(exc).__name__}: {exc}"
                responses.append(_error(pb_utils, message))
                continue
            outputs = [
                pb_utils.Tensor(contract.DALI_ENCODED, encoded),
                pb_utils.Tensor(contract.DALI_UPRIGHT, upright),
                pb_utils.Tensor(contract.DALI_SIZE, sizes),
                pb_utils.Tensor(contract.DALI_CROP_POSITION, positions),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses


def _error(pb_utils: Any, message: str) -> Any:
    error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
