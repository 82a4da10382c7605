"""What the prediction metrics watch, from the labels and the quality reference."""

from __future__ import annotations

import json

import pytest

from tvision_export import contract
from tvision_export.quality import (
    MIN_SHARE,
    QualityReference,
    QualityReferenceError,
    classifier_parameters,
    watched_classes,
)

DIGITS = [str(digit) for digit in range(10)]
IMAGENET_LIKE = [f"class {index}" for index in range(1000)]


def _reference(tmp_path, shares, top1=(0.9, 0.3, 0.8, 0.45)):
    path = tmp_path / "reference.json"
    path.write_text(QualityReference(model="m", class_shares=shares, top1=top1).to_json())
    return path


def test_every_class_is_watched_up_to_the_limit_without_a_reference() -> None:
    assert watched_classes(DIGITS, None) == DIGITS
    labels = IMAGENET_LIKE[: contract.WATCHED_CLASS_LIMIT]
    assert watched_classes(labels, None) == labels
    assert watched_classes(IMAGENET_LIKE[: contract.WATCHED_CLASS_LIMIT + 1], None) == []


def test_above_the_limit_the_references_most_frequent_classes_are_watched() -> None:
    shares = {f"class {index}": (index % 7 + 1) / 5000 for index in range(300)}
    shares["class 999"] = 0.0  # never predicted: not watched
    reference = QualityReference(model="m", class_shares=shares, top1=(0.5,))
    watched = watched_classes(IMAGENET_LIKE, reference)
    assert len(watched) == contract.WATCHED_CLASS_LIMIT
    # The 42 or 43 classes at the top share (index % 7 == 6) first, in label order.
    assert watched[:3] == ["class 6", "class 13", "class 20"]
    assert min(shares[name] for name in watched) >= max(
        share for name, share in shares.items() if name not in watched
    )


def test_the_reference_reaches_the_config_with_other_and_floored_shares(tmp_path) -> None:
    path = _reference(tmp_path, {"3": 0.5, "7": 0.5})
    parameters = classifier_parameters(DIGITS, 0.5, str(path))
    assert json.loads(parameters[contract.PARAM_WATCHED_CLASSES]) == DIGITS
    assert float(parameters[contract.PARAM_LOW_CONFIDENCE]) == 0.5
    reference = json.loads(parameters[contract.PARAM_QUALITY_REFERENCE])
    assert reference["class_shares"]["3"] == reference["class_shares"]["7"] == 0.5
    assert reference["class_shares"]["0"] == MIN_SHARE  # never seen: floored, not zero
    assert reference["class_shares"][contract.OTHER_CLASS] == MIN_SHARE
    assert reference["low_confidence_share"] == 0.5  # 0.3 and 0.45 of four


def test_no_reference_writes_no_reference_parameter() -> None:
    parameters = classifier_parameters(DIGITS, 0.4, "")
    assert contract.PARAM_QUALITY_REFERENCE not in parameters


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read quality reference"),
        ('{"kind": "something else"}', "is not a quality reference"),
        ('{"kind": "tvision-quality-reference", "model": "m"}', "malformed quality reference"),
    ],
)
def test_a_bad_reference_file_is_named(tmp_path, content, message) -> None:
    path = tmp_path / "reference.json"
    path.write_text(content)
    with pytest.raises(QualityReferenceError, match=message):
        classifier_parameters(DIGITS, 0.5, str(path))


def test_a_reference_of_another_models_classes_is_refused(tmp_path) -> None:
    path = _reference(tmp_path, {"espresso": 1.0})
    with pytest.raises(QualityReferenceError, match="names 1 classes this model does not have"):
        classifier_parameters(DIGITS, 0.5, str(path))
