"""The run's predictions, from the classifier's prediction metrics in the same two scrapes
as ``server_metrics``: how confident the answers were, and which classes they named.

The class mix has the classes the export watches (every class of a model of up to 100
labels, else those of its quality reference) and ``other``: the default model exported
without a reference counts every prediction as ``other`` (README, "Watching predictions
in production").
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from tvision_loadtest import report, server_metrics

# Copies of export/tvision_export/contract.py METRIC_* (tests/loadtest/test_quality_metrics.py).
PREDICTIONS = "tvision_predictions_total"
TOP1_BUCKET = "tvision_top1_probability_bucket"
LOW_CONFIDENCE = "tvision_low_confidence_total"

# (metric, the class or the bucket's upper edge) -> value, summed over versions
Counters = dict[tuple[str, str], float]


def parse(text: str, model: str) -> Counters:
    """The prediction metrics of the ensemble ``model`` from the text exposition format."""
    counters: Counters = {}
    for name, labels, value in server_metrics.samples(text):
        if name not in (PREDICTIONS, TOP1_BUCKET, LOW_CONFIDENCE) or labels.get("model") != model:
            continue
        key = (name, labels.get("class", labels.get("le", "")))
        counters[key] = counters.get(key, 0.0) + value
    return counters


@dataclass(frozen=True)
class RunQuality:
    predictions: int
    low_confidence: int
    top1_histogram: list[tuple[str, int]]  # ("0.4-0.5", predictions in it), low to high
    class_mix: list[tuple[str, int]]  # the most frequent first

    @property
    def low_confidence_share(self) -> float:
        return self.low_confidence / self.predictions if self.predictions else 0.0


def difference(before: Counters, after: Counters) -> RunQuality | None:
    """What the run added; None when the server exports no prediction metrics."""
    if not any(name == PREDICTIONS for name, _ in after):
        return None

    def delta(key: tuple[str, str]) -> int:
        return round(after.get(key, 0.0) - before.get(key, 0.0))

    edges = sorted(
        (label for name, label in after if name == TOP1_BUCKET),
        key=lambda edge: float("inf") if edge == "+Inf" else float(edge),
    )
    histogram, lower, below = [], "0", 0
    for edge in edges:
        cumulative = delta((TOP1_BUCKET, edge))
        histogram.append((f"{lower}-{'1' if edge == '+Inf' else edge}", cumulative - below))
        lower, below = edge, cumulative
    mix = [(label, delta((name, label))) for name, label in after if name == PREDICTIONS]
    mix.sort(key=lambda item: (-item[1], item[0]))
    return RunQuality(
        predictions=below,
        low_confidence=delta((LOW_CONFIDENCE, "")),
        top1_histogram=histogram,
        class_mix=[(label, count) for label, count in mix if count],
    )


def section(quality: RunQuality | None, note: str = "") -> list[str]:
    """The report's section: the top-1 probability histogram and the class mix."""
    part = ["<h2>Prediction quality (the classifier's prediction metrics, during the run)</h2>"]
    if quality is None or not quality.predictions:
        part.append(f"<p>{html.escape(note or 'The server exports no prediction metrics.')}</p>")
        return part
    part.append(
        f"<p>{quality.predictions} predictions, {quality.low_confidence} "
        f"({quality.low_confidence_share:.1%}) of low confidence.</p>"
    )
    histogram = {edges: {"predictions": float(n)} for edges, n in quality.top1_histogram}
    part.append(report.image(report.bar_chart("Top-1 probability", "", histogram)))
    top = quality.class_mix[:15]
    mix = {label: {"predictions": float(n)} for label, n in top}
    part.append(report.image(report.bar_chart("Predicted classes (most frequent)", "", mix)))
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{n}</td><td>{n / quality.predictions:.1%}</td></tr>"
        for label, n in top
    )
    part.append(f"<table><tr><th>class</th><th>predictions</th><th>share</th></tr>{rows}</table>")
    return part
