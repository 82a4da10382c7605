"""``tvision validate``: the served ensemble against in-process PyTorch on real photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvision.cli._common import (
    DEFAULT_REPOSITORY,
    DEFAULT_SPEC,
    Subparsers,
    endpoint_argument,
    fail,
)
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_OK


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    from tvision import validate

    parser = subparsers.add_parser(
        "validate", help="served ensemble vs in-process PyTorch on real photos (skew check)"
    )
    parser.add_argument(
        "--repository", default=str(DEFAULT_REPOSITORY), help="a directory or an s3:// snapshot"
    )
    endpoint_argument(parser)
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--images", type=Path, default=None, help="default: sample photos")
    parser.add_argument("--spec", default=DEFAULT_SPEC)
    parser.add_argument("--model", default=None, help="ensemble name (default: the spec's)")
    parser.add_argument(
        "--min-top1-agreement", type=float, default=validate.DEFAULT_MIN_TOP1_AGREEMENT
    )
    parser.add_argument(
        "--max-probability-diff", type=float, default=validate.DEFAULT_MAX_PROBABILITY_DIFF
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tvision import validate
    from tvision.cli._policy import configs_of
    from tvision_client import ClientError
    from tvision_export.snapshots import StoreError
    from tvision_export.spec import load_spec

    try:
        spec = load_spec(args.spec)
        images = validate.collect_images(args.images)
        with configs_of(args.repository, args.endpoint_url) as repository:
            outcome = validate.validate_served(spec, repository, args.url, images, args.model)
    except (OSError, ValueError, ImportError, ClientError, StoreError) as exc:
        return fail(exc)
    print(validate.render(outcome, args.min_top1_agreement, args.max_probability_diff))
    passed = outcome.passed(args.min_top1_agreement, args.max_probability_diff)
    return EXIT_OK if passed else EXIT_CHECK_FAILED
