"""The server's side of a run, from Triton's Prometheus metrics endpoint.

Two scrapes, before and after the run; the difference of Triton's per-model counters gives
each model's queue and compute time per request and the batch size it executed at.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

# name{label="value",...} number
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)

Counters = dict[tuple[str, str], float]  # (metric, model) -> value, summed over versions


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Each labelled sample of the text exposition format: (name, labels, value)."""
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match:
            yield match.group(1), dict(_LABEL.findall(match.group(2))), float(match.group(3))


def parse(text: str) -> Counters:
    """Triton's per-model counters from the text exposition format."""
    counters: Counters = {}
    for name, labels, value in samples(text):
        if name not in COUNTERS or "model" not in labels:
            continue
        key = (name, labels["model"])
        counters[key] = counters.get(key, 0.0) + value
    return counters


def read(url: str, timeout_s: float = 5.0) -> str:
    """The endpoint's text. Raises OSError (URLError) when it cannot be read."""
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return reply.read().decode("utf-8", errors="replace")


def scrape(url: str, timeout_s: float = 5.0) -> Counters:
    """Raises OSError (URLError) when the endpoint cannot be read."""
    return parse(read(url, timeout_s))


@dataclass(frozen=True)
class ModelLoad:
    """One model's share of the run."""

    model: str
    requests: int
    failures: int
    queue_ms_per_request: float
    compute_ms_per_request: float
    mean_batch_size: float


def difference(before: Counters, after: Counters) -> list[ModelLoad]:
    """Per model with requests during the run, in name order."""
    models = sorted({model for _, model in after})
    loads = []
    for model in models:

        def delta(metric: str, model: str = model) -> float:
            return after.get((metric, model), 0.0) - before.get((metric, model), 0.0)

        requests = delta("nv_inference_request_success")
        if requests <= 0:
            continue
        executions = delta("nv_inference_exec_count")
        loads.append(
            ModelLoad(
                model=model,
                requests=int(requests),
                failures=int(delta("nv_inference_request_failure")),
                queue_ms_per_request=delta("nv_inference_queue_duration_us") / requests / 1000,
                compute_ms_per_request=(
                    delta("nv_inference_compute_infer_duration_us") / requests / 1000
                ),
                mean_batch_size=delta("nv_inference_count") / executions if executions else 0.0,
            )
        )
    return loads
