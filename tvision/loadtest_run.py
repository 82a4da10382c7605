"""``make loadtest``: a bounded, gated Locust run against a fresh embedded server.

Starts the server on free loopback ports, runs ``tvision-loadtest`` headless with the
report and the server's metrics, stops the server, and exits with the gate's code
(0 passed, 1 an objective missed, 2 could not run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tvision.server import ServerPorts, TritonServer


def locust_command(
    host: str, users: int, spawn_rate: float, run_time: str, *extra: str
) -> list[str]:
    """A headless, time-bounded ``tvision-loadtest`` run against ``host``."""
    return [
        sys.executable, "-m", "tvision_loadtest.cli", "--headless",
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", run_time,
        "--stop-timeout", "5", "--host", host, "--only-summary", *extra,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, default=4.0)
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--report", type=Path, default=Path("bench-results/loadtest.html"))
    parser.add_argument(
        "gate", nargs=argparse.REMAINDER, help="more tvision-loadtest options (after --)"
    )
    args = parser.parse_args(argv)
    extra = [arg for arg in args.gate if arg != "--"]
    with TritonServer(args.repository, ServerPorts.free()) as server:
        print(f"server ready on {server.grpc_url}; running Locust for {args.run_time}", flush=True)
        command = locust_command(
            server.grpc_url, args.users, args.spawn_rate, args.run_time,
            "--report", str(args.report), "--metrics-url", server.metrics_url, *extra,
        )  # fmt: skip
        completed = subprocess.run(command, check=False)
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
