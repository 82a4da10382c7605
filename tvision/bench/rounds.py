"""Two or more clients measured in alternating rounds on one server, so that drift on a
shared machine hits each alike; their rates, and how the benchmarks print them."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tvision.bench.images import BenchImage
from tvision.bench.load import LoadResult, percentile_ms, run_closed_loop


@dataclass
class ClientRate:
    images_per_s: float
    rounds_images_per_s: list[float]
    p50_ms: float
    p99_ms: float


@dataclass
class RoundsRun:
    """How the rounds ran: on how many cores, how many callers, how many rounds how long."""

    cpu_count: int | None
    concurrency: int
    rounds: int
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": {"cpu_count": self.cpu_count},
            "concurrency": self.concurrency,
            "rounds": self.rounds,
            "duration_s": self.duration_s,
        }


def rates_json(rates: dict[str, ClientRate]) -> dict[str, Any]:
    return {name: asdict(rate) for name, rate in rates.items()}


def alternating_rounds(
    calls: dict[str, Callable[[BenchImage], int]],
    images: list[BenchImage],
    concurrency: int,
    rounds: int,
    duration_s: float,
    progress: Callable[[str], None],
) -> dict[str, list[LoadResult]]:
    """One warm-up second for each client, then ``rounds`` rounds of each, the order
    reversed every other round."""
    for call in calls.values():
        run_closed_loop(call, images, concurrency, 1.0)
    loads: dict[str, list[LoadResult]] = {name: [] for name in calls}
    for round_number in range(rounds):
        order = list(calls.items())
        if round_number % 2:
            order.reverse()
        for name, call in order:
            progress(f"round {round_number + 1}/{rounds}: {name}")
            loads[name].append(run_closed_loop(call, images, concurrency, duration_s))
    return loads


def client_rate(loads: list[LoadResult]) -> ClientRate:
    rates = [load.calls / load.seconds for load in loads]
    latencies = [latency for load in loads for latency in load.latencies_s]
    return ClientRate(
        images_per_s=statistics.mean(rates),
        rounds_images_per_s=rates,
        p50_ms=percentile_ms(latencies, 0.5),
        p99_ms=percentile_ms(latencies, 0.99),
    )


def rate_lines(rates: dict[str, ClientRate], label: str, width: int) -> list[str]:
    """A header and one line per client: mean img/s, p50, p99, and each round's img/s."""
    lines = [f"{label:<{width}}{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}  per round"]
    for name, rate in rates.items():
        rounds = " ".join(f"{value:.1f}" for value in rate.rounds_images_per_s)
        figures = f"{rate.images_per_s:>9.1f}{rate.p50_ms:>9.1f}{rate.p99_ms:>9.1f}"
        lines.append(f"{name:<{width}}{figures}  {rounds}")
    return lines


def ratio_line(what: str, ratio: float, target: float) -> str:
    verdict = "meets" if ratio >= target else "MISSES"
    return f"{what}: {ratio:.3f}x (target >= {target}x) {verdict}"
