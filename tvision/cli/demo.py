"""``tvision demo``: start the server, classify the bundled sample photos, stop."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvision.cli._common import DEFAULT_REPOSITORY, Subparsers, positive_int


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="start the server, classify the bundled sample photos, stop"
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tvision.demo import run_demo

    return run_demo(args.repository, args.top_k)
