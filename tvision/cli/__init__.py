"""The ``tvision`` command: one module per command group, each only parsing, calling the
library and printing; what the commands decide is in the library, and in ``_policy``.

Every command exits with a code from ``tvision.exit_codes`` (README, "Exit codes").
"""

from __future__ import annotations

import argparse

from tvision.cli import (
    bench,
    classify,
    demo,
    evaluate,
    export,
    fidelity,
    gpu_check,
    plan,
    repo,
    serve,
    tune,
    validate,
)

__all__ = ["build_parser", "main"]

# In the order ``tvision --help`` lists them.
COMMAND_GROUPS = (
    export,
    serve,
    classify,
    demo,
    bench,
    tune,
    repo,
    validate,
    evaluate,
    fidelity,
    plan,
    gpu_check,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvision", description="Image classification on NVIDIA Triton Inference Server."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
