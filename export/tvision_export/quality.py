"""The quality reference, and what the classifier's prediction metrics watch.

A quality reference is what a model predicted on a team's own images: the share of each
predicted class and every top-1 probability. ``tvision evaluate --save-reference FILE``
records one; ``tvision export --quality-reference FILE`` writes it into the classifier's
config, whose prediction metrics (``triton_models/prediction_metrics.py``) export it as
gauges beside the live counters, for the recording rules in
``k8s/components/servicemonitor`` to compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tvision_export import contract

REFERENCE_KIND = "tvision-quality-reference"
# The stability index takes ln(live share / reference share) per class: a class the
# reference never saw would make it infinite, so reference shares are at least this.
MIN_SHARE = 1e-4


class QualityReferenceError(ValueError):
    """A quality reference that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class QualityReference:
    model: str
    class_shares: dict[str, float]  # predicted class -> share of the images
    top1: tuple[float, ...]  # each image's top-1 probability

    @property
    def images(self) -> int:
        return len(self.top1)

    def low_confidence_share(self, below: float) -> float:
        return sum(probability < below for probability in self.top1) / self.images

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": REFERENCE_KIND,
                "model": self.model,
                "images": self.images,
                "class_shares": self.class_shares,
                "top1": [round(probability, 4) for probability in self.top1],
            },
            indent=1,
        )

    @classmethod
    def read(cls, path: Path) -> QualityReference:
        """Raises: QualityReferenceError: unreadable, or not a quality reference."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QualityReferenceError(f"cannot read quality reference {path}: {exc}") from exc
        if not isinstance(document, dict) or document.get("kind") != REFERENCE_KIND:
            raise QualityReferenceError(
                f"{path} is not a quality reference (written by tvision evaluate --save-reference)"
            )
        try:
            reference = cls(
                model=str(document["model"]),
                class_shares={str(k): float(v) for k, v in document["class_shares"].items()},
                top1=tuple(float(p) for p in document["top1"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise QualityReferenceError(f"{path}: a malformed quality reference: {exc}") from exc
        if not reference.top1:
            raise QualityReferenceError(f"{path}: a quality reference of no images")
        return reference


def watched_classes(labels: list[str], reference: QualityReference | None) -> list[str]:
    """The classes with a prediction counter of their own: every label up to
    ``contract.WATCHED_CLASS_LIMIT``; above it, the ones the reference predicted most often
    (none without a reference: every prediction is then counted as ``OTHER_CLASS``)."""
    if len(labels) <= contract.WATCHED_CLASS_LIMIT:
        return list(labels)
    if reference is None:
        return []
    order = {label: position for position, label in enumerate(labels)}
    ranked = sorted(
        (name for name, share in reference.class_shares.items() if share > 0),
        key=lambda name: (-reference.class_shares[name], order[name]),
    )
    return ranked[: contract.WATCHED_CLASS_LIMIT]


def classifier_parameters(labels: list[str], low_confidence: float, reference_path: str
                          ) -> dict[str, str]:  # fmt: skip
    """The classifier config's prediction-metric parameters.

    Raises:
        QualityReferenceError: the reference cannot be read or names a class not in labels.
    """
    reference = QualityReference.read(Path(reference_path)) if reference_path else None
    if reference is not None:
        unknown = sorted(set(reference.class_shares) - set(labels))
        if unknown:
            raise QualityReferenceError(
                f"quality reference {reference_path} (model {reference.model}) names "
                f"{len(unknown)} classes this model does not have, e.g. {unknown[:3]}"
            )
    watched = watched_classes(labels, reference)
    parameters = {
        contract.PARAM_LOW_CONFIDENCE: repr(low_confidence),
        contract.PARAM_WATCHED_CLASSES: json.dumps(watched),
    }
    if reference is not None:
        shares = {name: reference.class_shares.get(name, 0.0) for name in watched}
        shares[contract.OTHER_CLASS] = max(0.0, 1.0 - sum(shares.values()))
        parameters[contract.PARAM_QUALITY_REFERENCE] = json.dumps({
            "class_shares": {name: max(share, MIN_SHARE) for name, share in shares.items()},
            "low_confidence_share": reference.low_confidence_share(low_confidence),
        })  # fmt: skip
    return parameters
