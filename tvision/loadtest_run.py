"""``make loadtest``: a bounded, gated Locust run against a fresh embedded server.

Starts the server on free loopback ports, runs ``tvision-loadtest`` headless with the
report and the server's metrics, stops the server, and exits with the gate's code
(0 passed, 1 an objective missed, 2 could not run). Each run writes a report of its own,
``bench-results/loadtest-YYYYMMDD-HHMMSS.html`` (its UTC start) unless ``--report`` names
one, so the release recipe's second run keeps the first one's report.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from tvision.edge import EdgeLimits
from tvision.server import temporary_server
from tvision.server.repository import edge_limits_for


def locust_command(
    host: str, users: int, spawn_rate: float, run_time: str, *extra: str
) -> list[str]:
    """A headless, time-bounded ``tvision-loadtest`` run against ``host``."""
    return [
        sys.executable, "-m", "tvision_loadtest.cli", "--headless",
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", run_time,
        "--stop-timeout", "5", "--host", host, "--only-summary", *extra,
    ]  # fmt: skip


REPORTS = Path("bench-results")


def default_report(started: datetime | None = None) -> Path:
    """This run's own report: ``bench-results/loadtest-YYYYMMDD-HHMMSS.html`` from its UTC
    start, with ``-2``, ``-3``, ... should a report of that second exist already."""
    stamp = (started or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    path = REPORTS / f"loadtest-{stamp}.html"
    number = 1
    while path.exists():
        number += 1
        path = REPORTS / f"loadtest-{stamp}-{number}.html"
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, default=4.0)
    parser.add_argument("--run-time", default="60s")
    parser.add_argument(
        "--report", type=Path, default=None,
        help="the HTML report (default: bench-results/loadtest-YYYYMMDD-HHMMSS.html, this "
        "run's UTC start)",
    )  # fmt: skip
    parser.add_argument(
        "gate", nargs=argparse.REMAINDER, help="more tvision-loadtest options (after --)"
    )
    args = parser.parse_args(argv)
    extra = [arg for arg in args.gate if arg != "--"]
    report = args.report or default_report()
    # Every user runs on this machine, one address: the edge's per-client cap must admit
    # them all (with room for a retry each), or the run measures the cap.
    edge = edge_limits_for(
        args.repository,
        max_requests_per_client=max(EdgeLimits().max_requests_per_client, 2 * args.users),
    )
    with temporary_server(args.repository, edge=edge) as server:
        print(f"server ready on {server.grpc_url}; running Locust for {args.run_time}", flush=True)
        command = locust_command(
            server.grpc_url, args.users, args.spawn_rate, args.run_time,
            "--report", str(report), "--metrics-url", server.metrics_url, *extra,
        )  # fmt: skip
        completed = subprocess.run(command, check=False)
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
