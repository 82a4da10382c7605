"""``make loadtest``: a bounded Locust run with an SLO gate against a fresh embedded server.

Starts the server on free loopback ports, runs ``loadtest/locustfile.py`` headless, stops
the server, and exits with Locust's exit code (non-zero when an SLO is missed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tvision.server import ServerPorts, TritonServer

LOCUSTFILE = Path(__file__).resolve().parents[1] / "loadtest" / "locustfile.py"


def locust_command(
    host: str, users: int, spawn_rate: float, run_time: str, *extra: str
) -> list[str]:
    """A headless, time-bounded Locust run of ``loadtest/locustfile.py`` against ``host``."""
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", run_time,
        "--stop-timeout", "5", "--host", host, "--only-summary", *extra,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, default=4.0)
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--slo-p99-ms", type=float, default=2000.0)
    parser.add_argument("--slo-max-failure-ratio", type=float, default=0.0)
    args = parser.parse_args(argv)
    with TritonServer(args.repository, ServerPorts.free()) as server:
        print(f"server ready on {server.grpc_url}; running Locust for {args.run_time}", flush=True)
        command = locust_command(
            server.grpc_url,
            args.users,
            args.spawn_rate,
            args.run_time,
            "--slo-p99-ms",
            str(args.slo_p99_ms),
            "--slo-max-failure-ratio",
            str(args.slo_max_failure_ratio),
        )
        completed = subprocess.run(command, check=False)
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
