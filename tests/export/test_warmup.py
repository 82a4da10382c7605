"""Warmup on the cpu target, as the README promises: the classifier runs once at every
preferred batch size and at ``max_batch_size`` before it reports ready."""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.helpers import ROOT
from tvision_export.repository import ModelNames
from tvision_export.spec import DEFAULT_SPEC

NAMES = ModelNames.for_model(DEFAULT_SPEC.name)


def readme_cpu_preferred_batch_sizes() -> list[int]:
    """README: "Warmup runs the classifier once at every preferred batch size and at
    `max_batch_size`, on both targets" and "The cpu target's 4 and 8" preferred sizes."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Warmup runs the classifier once at every preferred batch size and at" in readme
    preferred = re.search(r"The cpu target's\s+(\d+) and (\d+)", readme)
    assert preferred, "the README's cpu preferred batch sizes"
    return [int(size) for size in preferred.groups()]


def cpu_classifier_config(repository: Path) -> model_config_pb2.ModelConfig:
    text = (repository / NAMES.classifier / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def warmup_batch_sizes(repository: Path) -> set[int]:
    """The README's sizes, as the exported config's batching gives them."""
    classifier = cpu_classifier_config(repository)
    return {*classifier.dynamic_batching.preferred_batch_size, classifier.max_batch_size}


def test_the_cpu_classifier_warms_up_at_every_batch_size_the_readme_names(cpu_repository):
    classifier = cpu_classifier_config(cpu_repository)
    assert list(classifier.dynamic_batching.preferred_batch_size) == (
        readme_cpu_preferred_batch_sizes()
    )
    expected = warmup_batch_sizes(cpu_repository)
    assert len(expected) == 3  # 4, 8 and a larger max_batch_size
    warmups = {warmup.batch_size: warmup for warmup in classifier.model_warmup}
    assert len(warmups) == len(classifier.model_warmup)  # each size once
    assert set(warmups) == expected
    (input_name,) = [tensor.name for tensor in classifier.input]
    for warmup in warmups.values():
        assert list(warmup.inputs) == [input_name]
        data = warmup.inputs[input_name]
        assert data.zero_data and list(data.dims) == list(DEFAULT_SPEC.input_dims)
