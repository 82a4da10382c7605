"""The release gate: service-level objectives judged on one run's totals, and regressions
against a saved baseline. Pure Python: no Locust, so it is tested in-process."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The gate's exit codes: a release pipeline can tell a missed SLO from a run that never ran.
EXIT_PASSED, EXIT_SLO_MISSED, EXIT_COULD_NOT_RUN = 0, 1, 2
BASELINE_FORMAT = 1


@dataclass(frozen=True)
class RunSummary:
    """What a run measured, as the gate and a baseline need it."""

    requests: int
    failures: int
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    duration_s: float
    # Image mix: file name -> (format, width x height, bytes), as sent.
    images: dict[str, str] = field(default_factory=dict)
    # A digest of the served model's configuration, when the server could be asked.
    server_config: str = ""

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def ran(self) -> bool:
        """Whether any request succeeded: a run with none judges nothing."""
        return self.requests > self.failures

    def to_json(self) -> dict[str, Any]:
        return {"format": BASELINE_FORMAT, **asdict(self), "failure_ratio": self.failure_ratio}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        if data.get("format") != BASELINE_FORMAT:
            raise ValueError(f"not a tvision load-test baseline (format {data.get('format')!r})")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Objectives:
    """Thresholds; 0 (or None for the baseline) leaves an objective out."""

    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_failure_ratio: float = 0.0
    min_throughput_rps: float = 0.0
    baseline: RunSummary | None = None
    max_throughput_drop: float = 0.10
    max_p99_rise: float = 0.20


@dataclass(frozen=True)
class Check:
    """One objective: its name, threshold and measured value, as a person reads them."""

    name: str
    threshold: str
    measured: str
    met: bool


@dataclass(frozen=True)
class Verdict:
    checks: list[Check]
    exit_code: int
    reason: str = ""

    @property
    def word(self) -> str:
        return {EXIT_PASSED: "PASSED", EXIT_SLO_MISSED: "FAILED"}.get(
            self.exit_code, "COULD NOT RUN"
        )

    def lines(self) -> list[str]:
        """The verdict as printed: one headline, then one line per objective."""
        if self.exit_code == EXIT_COULD_NOT_RUN:
            return [f"SLO gate COULD NOT RUN: {self.reason}"]
        missed = [check.name for check in self.checks if not check.met]
        headline = "SLO gate passed" if not missed else "SLO gate FAILED: " + ", ".join(missed)
        width = max(len(check.name) for check in self.checks)
        rows = [
            f"  {check.name:<{width}}  {check.threshold:<14} {check.measured:<34} "
            f"{'met' if check.met else 'MISSED'}"
            for check in self.checks
        ]
        return [headline, *rows]


def judge(run: RunSummary, objectives: Objectives) -> Verdict:
    """Every objective named, with its threshold and measured value; exit code 0/1/2."""
    if not run.ran:
        return Verdict(
            [], EXIT_COULD_NOT_RUN,
            f"{run.requests} requests, none succeeded (is the server reachable, and the "
            "model loaded?)",
        )  # fmt: skip
    checks = []
    for name, limit, measured in (
        ("p50 latency", objectives.p50_ms, run.p50_ms),
        ("p95 latency", objectives.p95_ms, run.p95_ms),
        ("p99 latency", objectives.p99_ms, run.p99_ms),
    ):
        if limit > 0:
            checks.append(Check(name, f"<= {limit:g} ms", f"{measured:.0f} ms", measured <= limit))
    checks.append(
        Check(
            "failure ratio",
            f"<= {objectives.max_failure_ratio:g}",
            f"{run.failure_ratio:.4f} ({run.failures} of {run.requests})",
            run.failure_ratio <= objectives.max_failure_ratio,
        )
    )
    if objectives.min_throughput_rps > 0:
        checks.append(
            Check(
                "throughput",
                f">= {objectives.min_throughput_rps:g} req/s",
                f"{run.throughput_rps:.1f} req/s",
                run.throughput_rps >= objectives.min_throughput_rps,
            )
        )
    if objectives.baseline is not None:
        checks.extend(_regressions(run, objectives))
    code = EXIT_PASSED if all(check.met for check in checks) else EXIT_SLO_MISSED
    return Verdict(checks, code)


def _regressions(run: RunSummary, objectives: Objectives) -> list[Check]:
    base = objectives.baseline
    assert base is not None
    throughput_change = _change(run.throughput_rps, base.throughput_rps)
    p99_change = _change(run.p99_ms, base.p99_ms)
    checks = [
        Check(
            "throughput vs baseline",
            f">= -{objectives.max_throughput_drop:.0%}",
            f"{throughput_change:+.1%} ({run.throughput_rps:.1f} vs "
            f"{base.throughput_rps:.1f} req/s)",
            throughput_change >= -objectives.max_throughput_drop,
        ),
        Check(
            "p99 vs baseline",
            f"<= +{objectives.max_p99_rise:.0%}",
            f"{p99_change:+.1%} ({run.p99_ms:.0f} vs {base.p99_ms:.0f} ms)",
            p99_change <= objectives.max_p99_rise,
        ),
    ]
    if base.server_config and run.server_config and base.server_config != run.server_config:
        # Not a failure: a new configuration is what a release often is. Said, so that a
        # regression is read with it.
        checks.append(
            Check(
                "server config",
                "(informational)",
                f"changed: {base.server_config[:12]} -> {run.server_config[:12]}",
                True,
            )
        )
    return checks


def _change(now: float, before: float) -> float:
    if before <= 0:
        return 0.0 if now <= 0 else math.inf
    return now / before - 1.0


def save_baseline(run: RunSummary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.to_json(), indent=2) + "\n", encoding="utf-8")


def load_baseline(path: Path) -> RunSummary:
    """Raises ValueError naming the file when it is missing or not a baseline."""
    try:
        return RunSummary.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ValueError(f"baseline {path} does not exist") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"baseline {path} is not a load-test baseline: {exc}") from None
