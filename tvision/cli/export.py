"""``tvision export``: a spec, or a brought ONNX file, into a repository or an s3:// store."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvision.cli._common import (
    DEFAULT_REPOSITORY,
    DEFAULT_SPEC,
    Subparsers,
    endpoint_argument,
    fail,
    float_triple,
    positive_int,
    stderr_console,
)
from tvision.cli._options import add_serving_arguments, serving_options_from
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_COULD_NOT_RUN, EXIT_OK


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("export", help="export a model into a Triton model repository")
    parser.add_argument(
        "--repository",
        default=str(DEFAULT_REPOSITORY),
        help="a directory (a new version is added), or s3://BUCKET/PREFIX (pushed as a snapshot)",
    )
    endpoint_argument(parser)
    parser.add_argument(
        "--spec",
        default=DEFAULT_SPEC,
        help="model spec as module:attribute (default: EfficientNet-Lite0, ImageNet)",
    )
    add_serving_arguments(parser.add_argument_group("serving options"))
    _add_bring_your_own_arguments(parser)
    parser.set_defaults(handler=run)


def _add_bring_your_own_arguments(parser: argparse.ArgumentParser) -> None:
    byo = parser.add_argument_group(
        "bring your own ONNX", "serve an existing ONNX classifier instead of a spec"
    )
    byo.add_argument("--onnx", type=Path, default=None, help="the ONNX file (left unchanged)")
    byo.add_argument("--labels", type=Path, default=None, help="one label per line")
    byo.add_argument("--name", default=None, help="ensemble name for the model")
    byo.add_argument(
        "--outputs",
        choices=("logits", "probabilities"),
        default="logits",
        help="what the model's output holds; logits get a Softmax appended (default: logits)",
    )
    byo.add_argument(
        "--resize-short-px",
        type=positive_int,
        default=None,
        help="resize the short side to this first (default: derived from the model's input, "
        "the crop / 0.875)",
    )
    byo.add_argument(
        "--crop-px",
        type=positive_int,
        default=None,
        help="center crop (default: derived from the model's input size; needed if dynamic)",
    )
    byo.add_argument(
        "--mean", type=float_triple, default=(0.0, 0.0, 0.0), help="per channel (default: 0,0,0)"
    )
    byo.add_argument(
        "--std", type=float_triple, default=(1.0, 1.0, 1.0), help="per channel (default: 1,1,1)"
    )
    byo.add_argument(
        "--scale", type=float, default=1.0, help="pixels are divided by this first (default: 1)"
    )
    byo.add_argument(
        "--channel-order", choices=("RGB", "BGR"), default="RGB", help="(default: RGB)"
    )
    byo.add_argument(
        "--atol",
        type=float,
        default=None,
        help="largest score difference from the original (default: an export's tolerance)",
    )


def run(args: argparse.Namespace) -> int:
    """Export into a local repository, or into a temporary one that is then pushed."""
    from tvision.cli._policy import export_destination
    from tvision.cli.repo import push_snapshot

    with export_destination(args.repository) as (local, remote):
        code = run_import(args, local) if args.onnx is not None else run_spec(args, local)
        if code != EXIT_OK or remote is None:
            return code
        return push_snapshot(local, remote, args.endpoint_url)


def run_spec(args: argparse.Namespace, repository: Path) -> int:
    from tvision_export.exporter import export_model
    from tvision_export.onnx_export import ExportValidationError
    from tvision_export.spec import load_spec

    console = stderr_console()
    try:
        options = serving_options_from(args)
        spec = load_spec(args.spec)
        with console.status("Starting export") as status:

            def on_step(step: str) -> None:
                console.print(step)
                status.update(step)

            result = export_model(spec, repository, options, on_step=on_step)
    except ExportValidationError as exc:
        return fail(exc, EXIT_CHECK_FAILED)
    except (ValueError, ImportError, OSError) as exc:
        return fail(exc)
    written, validation = result.written, result.validation
    console.print(
        f"[green]Exported[/green] {spec.name} version {written.version} "
        f"(target {options.target}) to {written.repository}"
    )
    console.print(
        f"  ONNX vs PyTorch: max |diff| {validation.max_abs_diff:.2e} "
        f"(atol {validation.atol:g}) over {len(validation.checks)} inputs"
    )
    console.print(f"  models: {', '.join(written.names.all())}; {result.labels_count} labels")
    console.print(f"  {len(written.files)} files, checksums in the version manifest")
    console.print(f"  preprocessing: {spec.preprocess.describe()}")
    return EXIT_OK


def run_import(args: argparse.Namespace, repository: Path) -> int:
    from tvision.cli._policy import import_preprocess
    from tvision_export.onnx_export import ExportValidationError
    from tvision_export.onnx_import import OnnxImportError, import_onnx, inspect_onnx

    tolerance = {} if args.atol is None else {"atol": args.atol}
    try:
        info = inspect_onnx(args.onnx)
        preprocess = import_preprocess(
            info, args.labels, args.name, args.crop_px,
            resize_short_px=args.resize_short_px, mean=args.mean, std=args.std,
            scale=args.scale, channel_order=args.channel_order,
        )  # fmt: skip
        written, report = import_onnx(
            args.onnx, args.labels, args.name, preprocess, args.outputs, repository,
            serving_options_from(args), **tolerance,
        )  # fmt: skip
    except OnnxImportError as exc:
        # The copy missing the original's scores is a failed check; anything else, the input.
        missed = isinstance(exc.__cause__, ExportValidationError)
        return fail(exc, EXIT_CHECK_FAILED if missed else EXIT_COULD_NOT_RUN)
    except (ValueError, OSError) as exc:
        return fail(exc)
    crop = preprocess.crop_px
    print(
        f"Imported {args.onnx} as {args.name} version {written.version} into "
        f"{written.repository}\n  input {info.input_name!r} {info.layout} {crop}x{crop}, "
        f"{info.num_classes} classes ({args.outputs}), batch "
        f"{'fixed at 1' if info.batch_fixed_at_one else 'dynamic'}\n"
        f"  copy vs original: max |diff| {report.max_abs_diff:.2e} (atol {report.atol:g}) "
        f"over {len(report.checks)} inputs\n"
        f"  models: {', '.join(written.names.all())}\n"
        f"  preprocessing: {preprocess.describe()}"
    )
    return EXIT_OK
