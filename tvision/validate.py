"""``tvision validate``: the served ensemble against the in-process PyTorch reference.

Training/serving skew shows up as served predictions that differ from what the model's
own reference preprocessing and PyTorch produce. This classifies the same photos both ways
and also checks that the repository's preprocessing parameters are the spec's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tvision_export.repository import ModelNames
from tvision_export.spec import ModelSpec, PreprocessSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Draft-mode JPEG decoding and crop-box resampling move probabilities by well under this.
DEFAULT_MAX_PROBABILITY_DIFF = 0.05
DEFAULT_MIN_TOP1_AGREEMENT = 1.0
COMPARED_CLASSES = 5


@dataclass(frozen=True)
class ImageComparison:
    image: str
    served_top1: int
    reference_top1: int
    max_probability_diff: float


@dataclass
class ValidationOutcome:
    comparisons: list[ImageComparison] = field(default_factory=list)
    config_problems: list[str] = field(default_factory=list)

    @property
    def top1_agreement(self) -> float:
        if not self.comparisons:
            return 0.0
        agree = sum(c.served_top1 == c.reference_top1 for c in self.comparisons)
        return agree / len(self.comparisons)

    @property
    def max_probability_diff(self) -> float:
        return max((c.max_probability_diff for c in self.comparisons), default=0.0)

    def passed(self, min_top1_agreement: float, max_probability_diff: float) -> bool:
        return (
            bool(self.comparisons)
            and not self.config_problems
            and self.top1_agreement >= min_top1_agreement
            and self.max_probability_diff <= max_probability_diff
        )


def collect_images(directory: Path | None) -> list[Path]:
    """Image files in ``directory`` (sorted), or the bundled sample photos.

    Raises:
        FileNotFoundError: the directory does not exist or holds no images.
    """
    if directory is None:
        from tvision_export.samples import sample_photos

        return [photo.path for photo in sample_photos()]
    if not directory.is_dir():
        raise FileNotFoundError(f"image directory {directory} does not exist")
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no {', '.join(IMAGE_SUFFIXES)} files in {directory}")
    return images


def check_repository_spec(repository: Path, model: str, spec: PreprocessSpec) -> list[str]:
    """Differences between the repository's preprocessing parameters and the spec's."""
    from tvision_export import configs

    config_path = repository / ModelNames.for_model(model).preprocess / "config.pbtxt"
    if not config_path.is_file():
        return [f"{config_path} does not exist"]
    config = configs.parse(config_path.read_text(encoding="utf-8"))
    deployed = json.loads(config.parameters["preprocess_spec"].string_value)
    expected = json.loads(spec.to_json())
    return [
        f"preprocessing {key}: repository has {deployed.get(key)!r}, spec has {value!r}"
        for key, value in expected.items()
        if deployed.get(key) != value
    ]


def validate_served(
    spec: ModelSpec,
    repository: Path,
    url: str,
    images: list[Path],
    model: str | None = None,
) -> ValidationOutcome:
    """Classify ``images`` through the server and in-process, and compare.

    Raises:
        tvision_client.ClientError: the server could not be reached or refused an image.
    """
    from tvision.reference_model import ReferenceClassifier
    from tvision_client import Client

    name = model or spec.name
    outcome = ValidationOutcome(
        config_problems=check_repository_spec(repository, name, spec.preprocess)
    )
    reference = ReferenceClassifier(spec)
    with Client(url, model=name, timeout_s=60) as client:
        for path in images:
            data = path.read_bytes()
            served = client.classify(data, top_k=COMPARED_CLASSES)
            probabilities = reference.probabilities(data)
            difference = max(
                abs(prediction.score - float(probabilities[prediction.index]))
                for prediction in served.predictions
            )
            outcome.comparisons.append(
                ImageComparison(
                    image=str(path),
                    served_top1=served.top.index,
                    reference_top1=int(probabilities.argmax()),
                    max_probability_diff=difference,
                )
            )
    return outcome


def render(outcome: ValidationOutcome, min_agreement: float, max_diff: float) -> str:
    lines = [f"{'image':<48}{'served':>8}{'torch':>8}{'max |Δp|':>10}"]
    for c in outcome.comparisons:
        mark = "" if c.served_top1 == c.reference_top1 else "  <- top-1 differs"
        name = c.image if len(c.image) <= 46 else "…" + c.image[-45:]
        lines.append(
            f"{name:<48}{c.served_top1:>8}{c.reference_top1:>8}"
            f"{c.max_probability_diff:>10.4f}{mark}"
        )
    lines.extend(f"config skew: {problem}" for problem in outcome.config_problems)
    verdict = "PASS" if outcome.passed(min_agreement, max_diff) else "FAIL"
    lines.append(
        f"{verdict}: top-1 agreement {outcome.top1_agreement:.1%} (need >= {min_agreement:.1%}), "
        f"largest probability difference {outcome.max_probability_diff:.4f} "
        f"(allowed <= {max_diff:g}) over the top {COMPARED_CLASSES} classes of "
        f"{len(outcome.comparisons)} images"
    )
    return "\n".join(lines)
