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


def _add(
    group: Any, flag: str, default: Any, env: str, help_text: str, shown: str = "", **kwargs: Any
) -> None:
    """One option, its help ending with its default (or ``shown``) and environment variable
    (Locust's parser prints neither by itself)."""
    shown = shown or ("none" if default in ("", None) else str(default))
    group.add_argument(
        flag, default=default, env_var=env,
        help=f"{help_text} (default: {shown.replace('%', '%%')}; env {env})", **kwargs,
    )  # fmt: skip


def add_arguments(parser: Any) -> None:
    """Locust's ``init_command_line_parser`` hook: the tvision and release-gate flags.

    ``tvision-loadtest --help`` prints these first (``cli.help_text``): Locust prints its
    help before it loads a locustfile, so it never shows them itself.
    """
    group = parser.add_argument_group("tvision")
    _add(group, "--model", _USER.model, "TVISION_MODEL", "ensemble to call")
    _add(group, "--top-k", _USER.top_k, "TVISION_TOP_K", "classes asked for per image", type=int)
    _add(group, "--timeout-s", _USER.timeout_s, "TVISION_TIMEOUT_S",
         "deadline per request, retries included", type=float)  # fmt: skip
    _add(group, "--images", _USER.images, "TVISION_IMAGES",
         "a directory or a quoted glob of images to send in turn",
         shown="the four photos in the package", metavar="DIR|GLOB")  # fmt: skip
    slo = parser.add_argument_group("tvision release gate (0: objective not used)")
    for name, field, help_text in _SLO_FLAGS:
        env = "TVISION_SLO_" + name.upper().replace("-", "_")
        _add(slo, f"--slo-{name}", getattr(_GATE, field), env, help_text, type=float)
    _add(slo, "--baseline", "", "TVISION_BASELINE",
         "a --save-baseline file: adds throughput and p99 regression objectives",
         metavar="FILE")  # fmt: skip
    _add(slo, "--max-throughput-drop", _GATE.max_throughput_drop,
         "TVISION_MAX_THROUGHPUT_DROP", "vs the baseline, as a fraction", type=float)  # fmt: skip
    _add(slo, "--max-p99-rise", _GATE.max_p99_rise, "TVISION_MAX_P99_RISE",
         "vs the baseline, as a fraction", type=float)  # fmt: skip
    _add(slo, "--save-baseline", "", "TVISION_SAVE_BASELINE", "write this run's figures (JSON)",
         metavar="FILE")  # fmt: skip
    _add(slo, "--report", "", "TVISION_REPORT", "write the verdict and charts (HTML)",
         metavar="FILE")  # fmt: skip
    _add(slo, "--metrics-url", "", "TVISION_METRICS_URL",
         "Triton's metrics endpoint (http://HOST:8002/metrics), for the report's server side",
         metavar="URL")  # fmt: skip


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
