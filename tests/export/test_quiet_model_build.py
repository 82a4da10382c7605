"""Building the default model prints nothing: the efficientnet package's own "Loaded
pretrained weights for efficientnet-lite0" line is not the export's to say."""

from __future__ import annotations

import pytest

from tvision_export.spec import DEFAULT_SPEC, PreprocessSpec


def test_building_the_default_model_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    model = DEFAULT_SPEC.build_model()
    assert not model.training
    out, err = capfd.readouterr()
    assert out == "" and "Loaded pretrained weights" not in err


def test_preprocessing_is_described_in_the_flags_names() -> None:
    preprocess = PreprocessSpec.for_crop(96, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert preprocess.describe() == (
        "resize_short_px 110, crop_px 96, scale 1, mean 0.485,0.456,0.406, "
        "std 0.229,0.224,0.225, channel_order RGB, layout NCHW"
    )
