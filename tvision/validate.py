"""``tvision validate``: the served ensemble against the in-process PyTorch reference.

Training/serving skew shows up as served predictions that differ from what the model's
own reference preprocessing and PyTorch produce. This classifies the same photos both ways
and also checks that the repository's preprocessing parameters are the spec's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tvision_client import IMAGE_SUFFIXES
from tvision_export.repository import ModelNames
from tvision_export.spec import ModelSpec, PreprocessSpec

# The fidelity bound: the shipped decode strategy meets it on the broad photo set
# (``tvision fidelity``, README), so a default export passes validate's defaults.
DEFAULT_MAX_PROBABILITY_DIFF = 0.05
DEFAULT_MIN_TOP1_AGREEMENT = 0.995
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
    decode_strategy: str = "unknown"

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


def latest_classifier_onnx(repository: Path, model: str) -> Path:
    """The newest version's ONNX file of ``model``'s classifier.

    Raises:
        FileNotFoundError: the repository holds no exported version of the model.
    """
    from tvision_export import contract

    classifier = repository / ModelNames.for_model(model).classifier
    versions = sorted(
        (int(child.name) for child in classifier.glob("*") if child.name.isdigit()), reverse=True
    )
    for version in versions:
        path = classifier / str(version) / contract.MODEL_ONNX_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"no exported {model} in {repository}; run 'tvision export' first")


def preprocess_parameters(repository: Path, model: str) -> dict[str, str]:
    """The preprocessing model's config parameters.

    Raises:
        FileNotFoundError: the repository has no such model.
    """
    from tvision_export import configs, contract

    config_path = repository / ModelNames.for_model(model).preprocess / contract.CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist")
    config = configs.parse(config_path.read_text(encoding="utf-8"))
    return {key: value.string_value for key, value in config.parameters.items()}


def check_repository_spec(repository: Path, model: str, spec: PreprocessSpec) -> list[str]:
    """Differences between the repository's preprocessing parameters and the spec's."""
    from tvision_export import contract

    try:
        parameters = preprocess_parameters(repository, model)
    except FileNotFoundError as exc:
        return [str(exc)]
    deployed = json.loads(parameters[contract.PARAM_PREPROCESS_SPEC])
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
    from tvision_export import contract

    name = model or spec.name
    outcome = ValidationOutcome(
        config_problems=check_repository_spec(repository, name, spec.preprocess)
    )
    try:
        parameters = preprocess_parameters(repository, name)
        outcome.decode_strategy = parameters.get(contract.PARAM_DECODE, "unknown")
    except FileNotFoundError:
        pass
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
    # Whole names, in a column as wide as the longest: a path cut short names no file.
    width = max([len("image"), *(len(c.image) for c in outcome.comparisons)]) + 2
    lines = [f"{'image':<{width}}{'served':>8}{'torch':>8}{'max |Δp|':>10}"]
    for c in outcome.comparisons:
        mark = "" if c.served_top1 == c.reference_top1 else "  <- top-1 differs"
        lines.append(
            f"{c.image:<{width}}{c.served_top1:>8}{c.reference_top1:>8}"
            f"{c.max_probability_diff:>10.4f}{mark}"
        )
    lines.extend(f"config skew: {problem}" for problem in outcome.config_problems)
    lines.append(
        f"JPEG decode strategy of the repository: {outcome.decode_strategy} "
        "(see the README's fidelity table; 'tvision fidelity' measures each strategy)"
    )
    verdict = "PASS" if outcome.passed(min_agreement, max_diff) else "FAIL"
    lines.append(
        f"{verdict}: top-1 agreement {outcome.top1_agreement:.1%} (need >= {min_agreement:.1%}), "
        f"largest probability difference {outcome.max_probability_diff:.4f} "
        f"(allowed <= {max_diff:g}) over the top {COMPARED_CLASSES} classes of "
        f"{len(outcome.comparisons)} images"
    )
    return "\n".join(lines)
