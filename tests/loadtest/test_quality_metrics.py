"""The run's prediction quality from two scrapes of the exposition format, worked by hand."""

from __future__ import annotations

from tvision_loadtest import quality

BEFORE = """
tvision_predictions_total{class="espresso",model="m",version="1"} 10
tvision_predictions_total{class="other",model="m",version="1"} 5
tvision_predictions_total{class="espresso",model="elsewhere",version="1"} 99
tvision_low_confidence_total{model="m",version="1"} 2
tvision_top1_probability_bucket{model="m",version="1",le="0.5"} 2
tvision_top1_probability_bucket{model="m",version="1",le="0.9"} 6
tvision_top1_probability_bucket{model="m",version="1",le="+Inf"} 15
"""
# The run: 4 espresso and 2 other, versions 1 and 2; top-1 under 0.5 once, 0.5-0.9 twice,
# over 0.9 three times.
AFTER = """
tvision_predictions_total{class="espresso",model="m",version="1"} 12
tvision_predictions_total{class="espresso",model="m",version="2"} 2
tvision_predictions_total{class="other",model="m",version="1"} 7
tvision_predictions_total{class="espresso",model="elsewhere",version="1"} 150
tvision_low_confidence_total{model="m",version="1"} 3
tvision_top1_probability_bucket{model="m",version="1",le="0.5"} 3
tvision_top1_probability_bucket{model="m",version="1",le="0.9"} 9
tvision_top1_probability_bucket{model="m",version="1",le="+Inf"} 21
"""


def test_the_difference_is_the_runs_histogram_and_class_mix() -> None:
    run = quality.difference(quality.parse(BEFORE, "m"), quality.parse(AFTER, "m"))
    assert run is not None
    assert run.predictions == 6 and run.low_confidence == 1
    assert run.top1_histogram == [("0-0.5", 1), ("0.5-0.9", 2), ("0.9-1", 3)]
    assert run.class_mix == [("espresso", 4), ("other", 2)]
    assert run.low_confidence_share == 1 / 6


def test_a_server_without_prediction_metrics_has_no_quality_section() -> None:
    assert quality.difference({}, quality.parse('nv_inference_count{model="m"} 3', "m")) is None
    (heading, note) = quality.section(None, "")
    assert "Prediction quality" in heading and "exports no prediction metrics" in note


def test_the_metric_names_are_the_contracts() -> None:
    """The load test cannot import the exporter, so it holds copies of three names."""
    from tvision_export import contract

    assert quality.PREDICTIONS == contract.METRIC_PREDICTIONS
    assert quality.LOW_CONFIDENCE == contract.METRIC_LOW_CONFIDENCE
    assert quality.TOP1_BUCKET == contract.METRIC_TOP1 + "_bucket"
