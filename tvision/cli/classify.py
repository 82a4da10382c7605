"""``tvision classify``: images on a running server, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tvision.cli._common import Subparsers, fail, positive_int
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_OK


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("classify", help="classify images on a running server")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="localhost:8001", help="HOST:PORT of Triton's gRPC")
    parser.add_argument("--model", default=None, help="ensemble name (default: the default model)")
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 1 when any image failed (its error is printed in its place), 2 when the server
    could not be asked at all (unreachable, or no such model)."""
    from tvision.cli._policy import classification_records, render_classifications
    from tvision_client import Client, ClientError

    client_args = {"model": args.model} if args.model else {}
    try:
        with Client(args.url, timeout_s=args.timeout_s, **client_args) as client:
            results = client.classify_batch(args.images, top_k=args.top_k, return_exceptions=True)
    except (ClientError, ValueError) as exc:
        return fail(exc)
    records = classification_records(args.images, results)
    print(json.dumps(records, indent=2) if args.json else render_classifications(records))
    return EXIT_CHECK_FAILED if any("error" in record for record in records) else EXIT_OK
