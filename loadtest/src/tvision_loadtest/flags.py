"""The load test's own options: their flags, defaults and environment variables, defined
once, and what they mean to the users (``UserSettings``) and to the gate (``objectives``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvision_client import DEFAULT_MODEL
from tvision_loadtest import BUNDLED_IMAGES, gate


@dataclass(frozen=True)
class UserSettings:
    """What each user calls, and with what: the flags' defaults are these."""

    model: str = DEFAULT_MODEL
    top_k: int = 5
    timeout_s: float = 10.0
    images: str = str(BUNDLED_IMAGES)

    @classmethod
    def of(cls, options: Any) -> UserSettings:
        """From Locust's parsed options; the defaults where there are none (users run from
        a script, without Locust's command line)."""
        if options is None:
            return cls()
        return cls(
            model=options.model,
            top_k=options.top_k,
            timeout_s=options.timeout_s,
            images=options.images,
        )


_USER = UserSettings()
_GATE = gate.Objectives()
# --slo-FLAG, the Objectives field it sets, and its help.
_SLO_FLAGS = (
    ("p50-ms", "p50_ms", "p50 latency limit, ms"),
    ("p95-ms", "p95_ms", "p95 latency limit, ms"),
    ("p99-ms", "p99_ms", "p99 latency limit, ms"),
    ("max-failure-ratio", "max_failure_ratio", "largest tolerated fraction of failed requests"),
    ("min-throughput", "min_throughput_rps", "lowest acceptable throughput, requests per second"),
)


def add_arguments(parser: Any) -> None:
    """Locust's ``init_command_line_parser`` hook: the tvision and release-gate flags."""
    group = parser.add_argument_group("tvision")
    group.add_argument(
        "--model", default=_USER.model, env_var="TVISION_MODEL", help="ensemble to call"
    )
    group.add_argument("--top-k", type=int, default=_USER.top_k, env_var="TVISION_TOP_K")
    group.add_argument(
        "--timeout-s", type=float, default=_USER.timeout_s, env_var="TVISION_TIMEOUT_S",
        help="deadline per request, retries included",
    )  # fmt: skip
    group.add_argument(
        "--images", default=_USER.images, env_var="TVISION_IMAGES",
        help="a directory or a quoted glob of images to send in turn (default: bundled photos)",
    )  # fmt: skip
    slo = parser.add_argument_group("tvision release gate (0: objective not used)")
    for name, field, help_text in _SLO_FLAGS:
        env = "TVISION_SLO_" + name.upper().replace("-", "_")
        slo.add_argument(
            f"--slo-{name}", type=float, default=getattr(_GATE, field), env_var=env,
            help=help_text,
        )  # fmt: skip
    slo.add_argument(
        "--baseline", default="", env_var="TVISION_BASELINE",
        help="a --save-baseline file: adds throughput and p99 regression objectives",
    )  # fmt: skip
    for flag, default in (
        ("--max-throughput-drop", _GATE.max_throughput_drop),
        ("--max-p99-rise", _GATE.max_p99_rise),
    ):
        help_text = f"vs the baseline, as a fraction (default {default:.2f})"
        slo.add_argument(flag, type=float, default=default, help=help_text)
    slo.add_argument("--save-baseline", default="", help="write this run's figures (JSON)")
    slo.add_argument("--report", default="", help="write the verdict and charts (HTML)")
    slo.add_argument(
        "--metrics-url", default="", env_var="TVISION_METRICS_URL",
        help="Triton's metrics endpoint (http://HOST:8002/metrics), for the report's server side",
    )  # fmt: skip


def objectives(options: Any, baseline: gate.RunSummary | None) -> gate.Objectives:
    """The gate's objectives from the parsed flags, with the loaded baseline."""
    thresholds = {
        field: getattr(options, "slo_" + name.replace("-", "_")) for name, field, _ in _SLO_FLAGS
    }
    return gate.Objectives(
        **thresholds,
        baseline=baseline,
        max_throughput_drop=options.max_throughput_drop,
        max_p99_rise=options.max_p99_rise,
    )
