"""What every command module shares: argument types, the endpoint flag, error output.

The exit codes are in ``tvision.exit_codes``; every command returns one of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvision.exit_codes import EXIT_COULD_NOT_RUN, EXIT_OK

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

DEFAULT_REPOSITORY = Path("model_repository")
DEFAULT_SPEC = "tvision_export.spec:EFFICIENTNET_LITE0"

Subparsers = argparse._SubParsersAction  # the object add_subparsers returns


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def name_list(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def float_triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers: {text}") from exc
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers: {text}")
    return values[0], values[1], values[2]


def endpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--endpoint-url``, the one definition: every command that reads or writes an
    s3:// location takes it (``tests/cli/test_help.py`` holds them to it)."""
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint of an s3:// location, e.g. http://minio:9000 (default: "
        "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS S3)",
    )


def stderr_console() -> Console:
    """The rich console every command draws on: standard error, and lines never wrapped
    (rich wraps at 80 columns when it is not on a terminal, splitting a log's lines)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def fail(error: BaseException | str, code: int = EXIT_COULD_NOT_RUN) -> int:
    """Say what went wrong on standard error, in one line and without a traceback."""
    print(f"error: {error}", file=sys.stderr)
    return code


def progress_printer(prefix: str) -> Callable[[str], None]:
    """A progress callback that prints ``[prefix] message`` on standard error."""

    def progress(message: str) -> None:
        print(f"[{prefix}] {message}", file=sys.stderr, flush=True)

    return progress


def emit(table: str, report: dict[str, Any], json_path: Path | None) -> int:
    """Print a command's table, and write its report as JSON when asked to."""
    print(table)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            return fail(f"cannot write the report: {exc}")
    return EXIT_OK
