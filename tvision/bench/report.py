"""Typed results of ``tvision bench``, and the ratios it is judged by (targets in one place)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PATHS = ("limit", "served", "client-side", "naive")
# The naive ratio is read at this concurrency, so a full run must include it.
NAIVE_COMPARISON_CONCURRENCY = 16


@dataclass(frozen=True)
class RatioTarget:
    key: str
    label: str
    target: float


RATIO_TARGETS = (
    RatioTarget("served_over_limit", "served (best) / in-process limit", 0.85),
    RatioTarget("served_over_client_side", "served (best) / client-side preprocessing (best)", 1.0),
    RatioTarget(
        "client_side_bytes_over_served_bytes", "bytes per image: client-side / served", 10.0
    ),
    RatioTarget(
        "served_over_naive_at_16",
        f"served / naive ensemble, concurrency {NAIVE_COMPARISON_CONCURRENCY}",
        2.0,
    ),
)


@dataclass
class RunResult:
    path: str
    concurrency: int
    images: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    wire_bytes_per_image: float
    server_cpu_s_per_image: float
    client_cpu_s_per_image: float
    errors: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    server_cpu_ms_per_image_by_part: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class BenchReport:
    cpu_count: int | None
    quick: bool
    duration_s: float
    serving_options: dict[str, Any]
    changed_options: list[str]
    image_bytes: dict[str, int]
    results: list[RunResult]

    def best(self, path: str) -> RunResult:
        return max((r for r in self.results if r.path == path), key=lambda r: r.images_per_s)

    def at(self, path: str, concurrency: int) -> RunResult:
        return next(r for r in self.results if r.path == path and r.concurrency == concurrency)

    def ratios(self) -> dict[str, float] | None:
        """Each ratio in ``RATIO_TARGETS``, or None unless every path ran."""
        if {r.path for r in self.results} != set(PATHS):
            return None
        served, limit, client_side = (
            self.best("served"),
            self.best("limit"),
            self.best("client-side"),
        )
        at_16 = NAIVE_COMPARISON_CONCURRENCY
        return {
            "served_over_limit": served.images_per_s / limit.images_per_s,
            "served_over_client_side": served.images_per_s / client_side.images_per_s,
            "client_side_bytes_over_served_bytes": (
                client_side.wire_bytes_per_image / served.wire_bytes_per_image
            ),
            "served_over_naive_at_16": (
                self.at("served", at_16).images_per_s / self.at("naive", at_16).images_per_s
            ),
        }

    def to_json(self) -> dict[str, Any]:
        ratios = self.ratios()
        return {
            "machine": {
                "cpu_count": self.cpu_count,
                "quick": self.quick,
                "duration_s": self.duration_s,
            },
            "serving_options": self.serving_options,
            "set": self.changed_options,
            "image_bytes": self.image_bytes,
            "results": [asdict(result) for result in self.results],
            "ratios": None
            if ratios is None
            else {**ratios, "targets": {t.key: t.target for t in RATIO_TARGETS}},
        }
