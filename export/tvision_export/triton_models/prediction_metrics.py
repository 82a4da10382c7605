"""The classifier's prediction metrics: Triton custom metrics of what it predicts.

Exported on Triton's metrics port beside Triton's own latency and throughput, labelled by
the ensemble's name and version (``contract.METRIC_*``):

- a histogram of each prediction's top-1 probability (``contract.TOP1_BUCKETS``);
- a counter of predictions per predicted class, for the watched classes (every class up to
  ``contract.WATCHED_CLASS_LIMIT`` labels, else those the quality reference holds most
  often), the rest counted as ``contract.OTHER_CLASS``;
- a counter of predictions whose top-1 probability is under the export's threshold;
- when the export was given a quality reference, gauges of its class shares and its
  low-confidence share, which the recording rules compare the live counters with.

Each update is a message from the stub to the server, so updates are made once per batch
where they can be: one increment per class predicted in the batch, one for the low
confidence count, and one histogram observation per prediction (Triton's histogram has no
bulk observation).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from . import contract  # the copy beside this file in a repository (see __init__.py)


class PredictionMetrics:
    """The metrics of one classifier instance, held for its lifetime; ``close`` releases
    them in the order the python backend requires (each metric before its family)."""

    def __init__(
        self,
        pb_utils: Any,
        model: str,
        version: str,
        labels: list[str],
        parameters: dict[str, str],
    ) -> None:
        family = pb_utils.MetricFamily
        base = {"model": model, "version": version}
        watched = json.loads(parameters[contract.PARAM_WATCHED_CLASSES])
        self.low_below = float(parameters[contract.PARAM_LOW_CONFIDENCE])
        index = {label: position for position, label in enumerate(labels)}
        # Each label's counter: its own if watched, else the last one (OTHER_CLASS).
        self.counter_of = np.full(len(labels), len(watched), dtype=np.intp)
        for slot, name in enumerate(watched):
            self.counter_of[index[name]] = slot
        self._top1_family = family(
            name=contract.METRIC_TOP1,
            description="Top-1 probability of each prediction",
            kind=family.HISTOGRAM,
        )
        self._predictions_family = family(
            name=contract.METRIC_PREDICTIONS,
            description="Predictions per predicted class (unwatched classes as 'other')",
            kind=family.COUNTER,
        )
        self._low_family = family(
            name=contract.METRIC_LOW_CONFIDENCE,
            description=f"Predictions whose top-1 probability is under {self.low_below:g}",
            kind=family.COUNTER,
        )
        self.top1 = self._top1_family.Metric(labels=base, buckets=list(contract.TOP1_BUCKETS))
        self.predictions = [
            self._predictions_family.Metric(labels={**base, "class": name})
            for name in [*watched, contract.OTHER_CLASS]
        ]
        self.low = self._low_family.Metric(labels=base)
        self._reference: list[Any] = []
        reference_text = parameters.get(contract.PARAM_QUALITY_REFERENCE, "")
        if reference_text:
            self._set_reference(pb_utils, base, json.loads(reference_text))

    def _set_reference(self, pb_utils: Any, base: dict[str, str], reference: Any) -> None:
        family = pb_utils.MetricFamily
        shares = family(
            name=contract.METRIC_REFERENCE_SHARE,
            description="Share of each watched class in the quality reference",
            kind=family.GAUGE,
        )
        low = family(
            name=contract.METRIC_REFERENCE_LOW_CONFIDENCE,
            description="Share of low-confidence predictions in the quality reference",
            kind=family.GAUGE,
        )
        gauges = []
        for name, share in reference["class_shares"].items():
            gauge = shares.Metric(labels={**base, "class": name})
            gauge.set(float(share))
            gauges.append(gauge)
        low_gauge = low.Metric(labels=base)
        low_gauge.set(float(reference["low_confidence_share"]))
        self._reference = [*gauges, low_gauge, shares, low]  # metrics before families

    def observe(self, probabilities: np.ndarray) -> None:
        """Count one batch of predictions (rows of class probabilities)."""
        top1 = probabilities.max(axis=1)
        for probability in top1.tolist():
            self.top1.observe(probability)
        low = int(np.count_nonzero(top1 < self.low_below))
        if low:
            self.low.increment(low)
        counters, counts = np.unique(
            self.counter_of[probabilities.argmax(axis=1)], return_counts=True
        )
        for counter, count in zip(counters.tolist(), counts.tolist(), strict=True):
            self.predictions[counter].increment(count)

    def close(self) -> None:
        """Release the metrics, then their families (the python backend's order)."""
        self._reference.clear()
        del self.top1, self.predictions, self.low
        del self._top1_family, self._predictions_family, self._low_family
