"""``tvision evaluate``: accuracy of the served ensemble on labelled photos, as a gate."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tvision.cli._common import DEFAULT_SPEC, Subparsers, fail, stderr_console
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_OK

if TYPE_CHECKING:
    from tvision_export.spec import ModelSpec


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="top-1/top-5 accuracy of the served model on labelled photos (a release gate)",
        description="Classify an ImageFolder set (one folder per class, named as the "
        "model's labels) through the server, beside the in-process reference. Exit 0 every "
        "objective met, 1 one missed, 2 could not run.",
    )
    parser.add_argument("--images", type=Path, required=True, help="one folder per class")
    parser.add_argument("--url", default="localhost:8001", help="default: %(default)s")
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="the model's spec (its labels)")
    parser.add_argument(
        "--labels", type=Path, default=None,
        help="a labels file instead of a spec (a model brought with export --onnx; no "
        "in-process reference then), with --model",
    )  # fmt: skip
    parser.add_argument("--model", default=None, help="ensemble name (default: the spec's)")
    parser.add_argument(
        "--no-reference", action="store_true",
        help="skip the in-process PyTorch reference (faster; no served-vs-model figure)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write the confusion matrix PNG")
    parser.add_argument("--min-top1", type=float, default=None, help="e.g. 0.7 (a fraction)")
    parser.add_argument("--baseline", type=Path, default=None, help="a --save-baseline file")
    parser.add_argument(
        "--max-top1-drop-points", type=float, default=1.0,
        help="with --baseline: the top-1 drop allowed, in points (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-unreadable", type=int, default=0,
        help="images the server may refuse as unreadable (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--save-baseline", type=Path, default=None, help="keep this run's figures")
    parser.add_argument(
        "--save-reference", type=Path, default=None,
        help="record the served class mix and confidence as a quality reference, for "
        "`tvision export --quality-reference` (the prediction metrics compare with it)",
    )  # fmt: skip
    parser.set_defaults(handler=run)


def _reference(spec: ModelSpec) -> Callable[[bytes], int]:
    """The in-process top-1: the model's reference preprocessing and PyTorch."""
    from tvision.reference_model import ReferenceClassifier

    classifier = ReferenceClassifier(spec)
    return lambda data: int(classifier.probabilities(data).argmax())


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from tvision import evaluate, evaluate_report
    from tvision_client import ClientError
    from tvision_export.spec import load_spec, read_labels

    if args.labels is not None and args.model is None:
        return fail("--labels needs --model, the name the model is served under")
    try:
        baseline = evaluate.load_baseline(args.baseline) if args.baseline else None
        spec = None if args.labels is not None else load_spec(args.spec)
        if spec is None:
            labels, model = read_labels(args.labels), str(args.model)
        else:
            labels, model = spec.load_labels(), args.model or spec.name
        images = evaluate.collect_labelled(args.images, labels)
        reference = None if args.no_reference or spec is None else _reference(spec)
        with Progress(console=stderr_console(), transient=True) as bar:
            task = bar.add_task("classifying", total=len(images))
            outcome = evaluate.evaluate(
                args.url, model, labels, images, reference,
                progress=lambda done: bar.advance(task, done),
            )  # fmt: skip
    except (OSError, ValueError, ImportError, ClientError) as exc:
        return fail(exc)
    if outcome.count == 0:
        return fail(f"the server could read none of the {len(images)} images")
    checks = evaluate.judge(
        outcome, args.min_top1, baseline, args.max_top1_drop_points, args.max_unreadable
    )
    print(evaluate_report.render(outcome, checks))
    try:
        if args.json is not None:
            args.json.write_text(json.dumps(outcome.to_json(), indent=2) + "\n", encoding="utf-8")
        if args.save_baseline is not None:
            args.save_baseline.write_text(json.dumps(outcome.to_json()) + "\n", encoding="utf-8")
        if args.save_reference is not None:
            reference = outcome.quality_reference(model)
            args.save_reference.write_text(reference.to_json() + "\n", encoding="utf-8")
        if args.plot is not None:
            evaluate_report.plot(outcome, args.plot)
    except OSError as exc:
        return fail(f"cannot write the report: {exc}")
    return EXIT_OK if all(check.met for check in checks) else EXIT_CHECK_FAILED
