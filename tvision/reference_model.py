"""In-process PyTorch reference: the spec's model and reference preprocessing, no server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvision_export.onnx_export import build_module, torch_reference
from tvision_export.reference import reference_preprocess
from tvision_export.spec import ModelSpec


@dataclass(frozen=True)
class ReferencePrediction:
    index: int
    score: float


class ReferenceClassifier:
    """Classifies encoded images in-process with PyTorch, for skew checks."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.module = build_module(spec)
        self._probabilities = torch_reference(self.module, spec.outputs)
        self.labels = spec.load_labels()

    def probabilities(self, image_bytes: bytes) -> np.ndarray:
        """Class probabilities for one encoded image.

        Raises:
            PIL.UnidentifiedImageError: the bytes are not an image.
        """
        pixels = reference_preprocess(image_bytes, self.spec.preprocess)
        return self._probabilities(pixels[np.newaxis])[0]

    def top_k(self, image_bytes: bytes, k: int = 5) -> list[ReferencePrediction]:
        probabilities = self.probabilities(image_bytes)
        order = np.argsort(probabilities)[::-1][:k]
        return [ReferencePrediction(int(i), float(probabilities[i])) for i in order]
