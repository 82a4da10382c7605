"""``tvision fidelity``: each JPEG decode strategy against the reference preprocessing."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvision.cli._common import (
    DEFAULT_REPOSITORY,
    Subparsers,
    emit,
    fail,
    name_list,
    progress_printer,
)


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    from tvision.fidelity_strategies import DALI_TWIN
    from tvision_export.contract import DECODE_HEADROOM, DEFAULT_DECODE

    parser = subparsers.add_parser(
        "fidelity",
        help="each JPEG decode strategy against the model's reference preprocessing",
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--photos", type=Path, default=Path("fidelity-photos"))
    parser.add_argument(
        "--build", action="store_true", help="(re)build the photo set from packages first"
    )
    parser.add_argument(
        "--quirks-only", action="store_true", help="with --build: only the hardest sizes"
    )
    parser.add_argument(
        "--strategies",
        type=name_list,
        default=None,
        help=f"comma-separated; default all ({','.join(DECODE_HEADROOM)}), and {DALI_TWIN} "
        "(the DALI path's CPU twin) where DALI is installed",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.set_defaults(handler=run, default_decode=DEFAULT_DECODE)


def run(args: argparse.Namespace) -> int:
    from tvision import fidelity
    from tvision.dali_twin import INSTALL_HINT
    from tvision.fidelity_strategies import default_strategies
    from tvision.validate import latest_classifier_onnx
    from tvision_export.spec import DEFAULT_SPEC

    progress = progress_printer("fidelity")
    try:
        onnx_path = latest_classifier_onnx(args.repository, DEFAULT_SPEC.name)
        if args.build:
            sizes = "quirks" if args.quirks_only else "all"
            fidelity.build_photo_set(args.photos, sizes, progress=progress)
        images = sorted(path for path in args.photos.iterdir() if path.is_file())
        strategies = args.strategies or default_strategies()
        if fidelity.DALI_TWIN not in strategies and not args.strategies:
            progress(f"{fidelity.DALI_TWIN}: not measured, DALI is not installed ({INSTALL_HINT})")
        report = fidelity.measure(
            DEFAULT_SPEC, onnx_path, images, strategies, args.default_decode, progress
        )
    except (fidelity.FidelityError, ValueError, OSError) as exc:
        return fail(exc)
    return emit(fidelity.render(report), report.to_json(), args.json)
