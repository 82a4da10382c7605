"""``tvision evaluate``: the served ensemble's accuracy on a team's labelled photos.

The photos are in the ImageFolder layout, one folder per class, each folder named as one
of the model's labels (or with ``_`` for spaces, in any case). Every image is classified
through the server with the SDK, and, unless told not to, in-process by the model's own
reference preprocessing and PyTorch, so that the served figure stands beside what the
model itself scores on the same images. An image the server cannot read is counted and
named, never dropped. The report feeds a gate with the load test's exit codes.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvision_client import IMAGE_SUFFIXES
from tvision_export.quality import QualityReference

TOP_K = 5
BASELINE_FORMAT = 1
# The two-sided 95% normal quantile, for the Wilson score interval.
Z_95 = 1.959964


class EvaluationError(ValueError):
    """The labelled set cannot be evaluated as given (the message names why)."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int  # the index of its folder's label


def label_folder_names(labels: Sequence[str]) -> dict[str, int]:
    """The folder names that mean each label: the label itself, any case, ``_`` for spaces."""
    names: dict[str, int] = {}
    for index, label in enumerate(labels):
        for name in (label, label.replace(" ", "_")):
            names.setdefault(name.casefold(), index)
    return names


def collect_labelled(directory: Path, labels: Sequence[str]) -> list[LabelledImage]:
    """Every image under ``directory``'s class folders, with its folder's label.

    Raises:
        EvaluationError: no such directory, no class folders, a folder that matches no
            label (the nearest labels are named), or a folder with no images.
    """
    if not directory.is_dir():
        raise EvaluationError(f"{directory} is not a directory")
    folders = sorted(child for child in directory.iterdir() if child.is_dir())
    if not folders:
        raise EvaluationError(f"{directory} has no class folders (one folder per class)")
    names = label_folder_names(labels)
    found: list[LabelledImage] = []
    for folder in folders:
        index = names.get(folder.name.casefold())
        if index is None:
            near = difflib.get_close_matches(folder.name.casefold(), list(names), n=3)
            hint = f"; nearest labels: {', '.join(near)}" if near else ""
            raise EvaluationError(f"folder '{folder.name}' matches no label of the model{hint}")
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise EvaluationError(
                f"folder '{folder.name}' has no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        found += [LabelledImage(path, index) for path in images]
    return found


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (sound at 0 and 1 and for small counts)."""
    if total == 0:
        return 0.0, 0.0
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # At 0 and at every success the bound is exactly 0 or 1 (not its rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float
    recall: float
    support: int


@dataclass
class Evaluation:
    labels: list[str]
    truth: list[int] = field(default_factory=list)
    served: list[list[int]] = field(default_factory=list)  # each image's top-5 indexes
    top1_probability: list[float] = field(default_factory=list)  # each image's served top-1
    reference: list[int] = field(default_factory=list)  # in-process top-1; empty if not run
    images: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (image, the error)

    @property
    def count(self) -> int:
        return len(self.truth)

    def top1(self) -> float:
        return self._share(sum(s[0] == t for s, t in zip(self.served, self.truth, strict=True)))

    def top5(self) -> float:
        return self._share(sum(t in s for s, t in zip(self.served, self.truth, strict=True)))

    def reference_top1(self) -> float | None:
        if not self.reference:
            return None
        return self._share(sum(r == t for r, t in zip(self.reference, self.truth, strict=True)))

    def agreement(self) -> float | None:
        """How often the served top-1 is the reference's (None without the reference)."""
        if not self.reference:
            return None
        return self._share(sum(s[0] == r for s, r in zip(self.served, self.reference, strict=True)))

    def top1_interval(self) -> tuple[float, float]:
        correct = sum(s[0] == t for s, t in zip(self.served, self.truth, strict=True))
        return wilson_interval(correct, self.count)

    def _share(self, count: int) -> float:
        return count / self.count if self.count else 0.0

    def per_class(self) -> list[ClassScore]:
        """Precision, recall and support of each class the set has, or the server predicted."""
        predicted = Counter(s[0] for s in self.served)
        support = Counter(self.truth)
        hits = Counter(t for s, t in zip(self.served, self.truth, strict=True) if s[0] == t)
        scores = []
        for index in sorted(set(support) | set(predicted), key=lambda i: self.labels[i]):
            scores.append(
                ClassScore(
                    label=self.labels[index],
                    precision=hits[index] / predicted[index] if predicted[index] else 0.0,
                    recall=hits[index] / support[index] if support[index] else 0.0,
                    support=support[index],
                )
            )
        return scores

    def confused_pairs(self, limit: int = 10) -> list[tuple[str, str, int]]:
        """(true label, predicted label, count), the most frequent mistakes first."""
        pairs = Counter(
            (t, s[0]) for s, t in zip(self.served, self.truth, strict=True) if s[0] != t
        )
        ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))
        return [(self.labels[t], self.labels[p], n) for (t, p), n in ranked[:limit]]

    def quality_reference(self, model: str) -> QualityReference:
        """What the server predicted on these images, for ``export --quality-reference``:
        the share of each predicted class and every top-1 probability."""
        predicted = Counter(self.labels[s[0]] for s in self.served)
        shares = {label: count / self.count for label, count in sorted(predicted.items())}
        return QualityReference(model=model, class_shares=shares, top1=tuple(self.top1_probability))

    def to_json(self) -> dict[str, Any]:
        low, high = self.top1_interval()
        return {
            "format": BASELINE_FORMAT,
            "images": self.count,
            "top1": self.top1(),
            "top1_interval_95": [low, high],
            "top5": self.top5(),
            "reference_top1": self.reference_top1(),
            "served_reference_agreement": self.agreement(),
            "unreadable": [{"image": image, "error": error} for image, error in self.unreadable],
            "per_class": [vars(score) for score in self.per_class()],
            "confused_pairs": [
                {"true": t, "predicted": p, "count": n} for t, p, n in self.confused_pairs()
            ],
            "predictions": [
                {"image": image, "true": self.labels[t], "served_top5": [self.labels[i] for i in s]}
                for image, t, s in zip(self.images, self.truth, self.served, strict=True)
            ],
        }


def evaluate(
    url: str,
    model: str,
    labels: list[str],
    images: list[LabelledImage],
    reference: Callable[[bytes], int] | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 64,
) -> Evaluation:
    """Classify every image through the server (and with ``reference``, in-process).

    Raises:
        tvision_client.ClientError: the server could not be reached, or has no such model.
    """
    from tvision_client import Client, ClientError, InvalidInputError

    outcome = Evaluation(labels=labels)
    with Client(url, model=model, timeout_s=60) as client:
        client.model_info()  # an unreachable server or unknown model ends it here
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            results = client.classify_batch(
                [item.path for item in chunk], top_k=TOP_K, return_exceptions=True
            )
            for item, result in zip(chunk, results, strict=True):
                if isinstance(result, InvalidInputError):
                    outcome.unreadable.append((str(item.path), str(result)))
                    continue
                if isinstance(result, ClientError):
                    raise result
                outcome.images.append(str(item.path))
                outcome.truth.append(item.label)
                outcome.served.append([p.index for p in result.predictions])
                outcome.top1_probability.append(result.top.score)
                if reference is not None:
                    outcome.reference.append(reference(item.path.read_bytes()))
            if progress is not None:
                progress(len(chunk))
    return outcome


@dataclass(frozen=True)
class Check:
    """One objective, as the load test's gate prints it."""

    name: str
    threshold: str
    measured: str
    met: bool


def judge(
    outcome: Evaluation,
    min_top1: float | None = None,
    baseline: dict[str, Any] | None = None,
    max_top1_drop_points: float = 1.0,
    max_unreadable: int = 0,
) -> list[Check]:
    """The gate's checks: unreadable images always; the others when asked for."""
    checks = [
        Check("unreadable images", f"<= {max_unreadable}", str(len(outcome.unreadable)),
              len(outcome.unreadable) <= max_unreadable)
    ]  # fmt: skip
    top1 = outcome.top1()
    if min_top1 is not None:
        met = top1 >= min_top1
        checks.append(Check("top-1 accuracy", f">= {min_top1:.1%}", f"{top1:.1%}", met))
    if baseline is not None:
        drop = (float(baseline["top1"]) - top1) * 100
        checks.append(
            Check("top-1 vs baseline", f"drop <= {max_top1_drop_points:g} pt",
                  f"{-drop:+.1f} pt ({top1:.1%} vs {float(baseline['top1']):.1%})",
                  drop <= max_top1_drop_points)
        )  # fmt: skip
    return checks


def load_baseline(path: Path) -> dict[str, Any]:
    """A baseline saved by ``--save-baseline``.

    Raises:
        EvaluationError: unreadable, or not an evaluation baseline.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read the baseline {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or "top1" not in data:
        raise EvaluationError(f"{path} is not a tvision evaluate baseline")
    return data
