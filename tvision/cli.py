"""The ``tvision`` command: export, serve, classify.

A thin layer over library functions; heavy modules are imported inside the subcommands.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

DEFAULT_REPOSITORY = Path("model_repository")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


# -- export ----------------------------------------------------------------------------


def _add_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tvision_export.configs import ServingOptions

    parser = subparsers.add_parser("export", help="export a model into a Triton model repository")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument(
        "--spec",
        default="tvision_export.spec:EFFICIENTNET_LITE0",
        help="model spec as module:attribute (default: EfficientNet-Lite0, ImageNet)",
    )
    ServingOptions.add_arguments(parser.add_argument_group("serving options"))
    byo = parser.add_argument_group(
        "bring your own ONNX", "serve an existing ONNX classifier instead of a spec"
    )
    byo.add_argument("--onnx", type=Path, default=None, help="the ONNX file (left unchanged)")
    byo.add_argument("--labels", type=Path, default=None, help="one label per line")
    byo.add_argument("--name", default=None, help="ensemble name for the model")
    byo.add_argument("--outputs", choices=("logits", "probabilities"), default="logits")
    byo.add_argument("--resize-short-px", type=_positive_int, default=None)
    byo.add_argument("--crop-px", type=_positive_int, default=None)
    byo.add_argument("--mean", type=_float_triple, default=(0.0, 0.0, 0.0))
    byo.add_argument("--std", type=_float_triple, default=(1.0, 1.0, 1.0))
    byo.add_argument("--scale", type=float, default=1.0, help="pixels are divided by this first")
    byo.add_argument("--channel-order", choices=("RGB", "BGR"), default="RGB")
    byo.add_argument(
        "--atol", type=float, default=None, help="largest score difference from the original"
    )
    parser.set_defaults(handler=_run_export)


def _float_triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers: {text}") from exc
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers: {text}")
    return values[0], values[1], values[2]


def _run_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tvision_export.configs import ServingOptions
    from tvision_export.exporter import export_model
    from tvision_export.onnx_export import ExportValidationError
    from tvision_export.spec import load_spec

    if args.onnx is not None:
        return _run_import(args)
    console = Console(stderr=True)
    try:
        options = ServingOptions.from_arguments(args)
        spec = load_spec(args.spec)
        with console.status("Starting export") as status:

            def on_step(step: str) -> None:
                console.log(step)
                status.update(step)

            result = export_model(spec, args.repository, options, on_step=on_step)
    except (ExportValidationError, ValueError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    written = result.written
    console.print(
        f"[green]Exported[/green] {spec.name} version {written.version} "
        f"(target {options.target}) to {written.repository}"
    )
    console.print(
        f"  ONNX vs PyTorch: max |diff| {result.validation.max_abs_diff:.2e} "
        f"(atol {result.validation.atol:g}) over {len(result.validation.checks)} inputs"
    )
    console.print(f"  models: {', '.join(written.names.all())}; {result.labels_count} labels")
    console.print(f"  {len(written.files)} files, checksums in the version manifest")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from tvision_export.configs import ServingOptions
    from tvision_export.onnx_import import OnnxImportError, import_onnx, inspect_onnx
    from tvision_export.spec import PreprocessSpec, ValidationSpec

    if args.labels is None or args.name is None:
        print("error: --onnx needs --labels and --name", file=sys.stderr)
        return 2
    try:
        info = inspect_onnx(args.onnx)
        crop = args.crop_px or info.height
        if crop is None:
            print(
                "error: the model's input size is dynamic; pass --crop-px (and --resize-short-px)",
                file=sys.stderr,
            )
            return 2
        preprocess = PreprocessSpec.for_crop(
            crop,
            resize_short_px=args.resize_short_px,
            mean=args.mean,
            std=args.std,
            scale=args.scale,
            channel_order=args.channel_order,
            layout=info.layout,
        )
        written, report = import_onnx(
            args.onnx,
            args.labels,
            args.name,
            preprocess,
            args.outputs,
            args.repository,
            ServingOptions.from_arguments(args),
            atol=args.atol if args.atol is not None else ValidationSpec().atol,
        )
    except (OnnxImportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Imported {args.onnx} as {args.name} version {written.version} into "
        f"{written.repository}\n  input {info.input_name!r} {info.layout} {crop}x{crop}, "
        f"{info.num_classes} classes ({args.outputs}), batch "
        f"{'fixed at 1' if info.batch_fixed_at_one else 'dynamic'}\n"
        f"  copy vs original: max |diff| {report.max_abs_diff:.2e} (atol {report.atol:g}) "
        f"over {len(report.checks)} inputs\n"
        f"  models: {', '.join(written.names.all())}"
    )
    return 0


# -- serve -----------------------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the embedded Triton server in the foreground")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--ready-timeout-s", type=float, default=240.0)
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from tvision.server import ServerError, ServerPorts, TritonServer

    ports = ServerPorts(grpc=args.grpc_port, http=args.http_port, metrics=args.metrics_port)
    server = TritonServer(args.repository, ports, address=args.address)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        print(f"\nreceived {signal.Signals(signum).name}, stopping", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(f"starting tritonserver on {args.repository} ...", file=sys.stderr)
    try:
        server.start(ready_timeout_s=args.ready_timeout_s)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}\n"
        f"log: {server.log_path}\npress Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            if server.process is None or server.process.poll() is not None:
                print(f"tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        code = server.stop()
    print(f"stopped (tritonserver exit code {code})", file=sys.stderr)
    return 0


# -- classify --------------------------------------------------------------------------


def _add_classify(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("classify", help="classify images on a running server")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="localhost:8001", help="HOST:PORT of Triton's gRPC")
    parser.add_argument("--model", default=None, help="ensemble name (default: the default model)")
    parser.add_argument("--top-k", type=_positive_int, default=5)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=_run_classify)


def _run_classify(args: argparse.Namespace) -> int:
    from tvision_client import Classification, Client, ClientError

    client_args = {"model": args.model} if args.model else {}
    with Client(args.url, timeout_s=args.timeout_s, **client_args) as client:
        try:
            results = client.classify_batch(args.images, top_k=args.top_k, return_exceptions=True)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    failures = 0
    records = []
    for image, result in zip(args.images, results, strict=False):
        if isinstance(result, Classification):
            records.append(
                {
                    "image": str(image),
                    "predictions": [
                        {"label": p.label, "index": p.index, "score": p.score}
                        for p in result.predictions
                    ],
                }
            )
        else:
            failures += 1
            records.append({"image": str(image), "error": str(result)})
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for record in records:
            print(record["image"])
            if "error" in record:
                print(f"  error: {record['error']}")
                continue
            for prediction in record["predictions"]:
                print(
                    f"  {prediction['score']:7.2%}  {prediction['label']} ({prediction['index']})"
                )
    return 1 if failures else 0


# -- demo ------------------------------------------------------------------------------


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="start the server, classify the bundled sample photos, stop"
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--top-k", type=_positive_int, default=5)
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from tvision.demo import run_demo

    return run_demo(args.repository, args.top_k)


# -- repo verify ------------------------------------------------------------------------


def _add_repo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repo = subparsers.add_parser("repo", help="model repository tools")
    repo_commands = repo.add_subparsers(dest="repo_command", required=True)
    verify = repo_commands.add_parser("verify", help="check configs, files, checksums, wiring")
    verify.add_argument("repository", type=Path, nargs="?", default=DEFAULT_REPOSITORY)
    verify.set_defaults(handler=_run_repo_verify)


def _run_repo_verify(args: argparse.Namespace) -> int:
    from tvision_export.verify import first_of_each_kind, verify_repository

    problems = verify_repository(args.repository)
    if not problems:
        print(f"OK: {args.repository} passed every check")
        return 0
    print(f"FAILED: {len(problems)} problem(s) in {args.repository}")
    for problem, count in first_of_each_kind(problems):
        more = f"  (+{count - 1} more of this kind)" if count > 1 else ""
        print(f"  {problem}{more}")
    return 1


# -- validate ---------------------------------------------------------------------------


def _add_validate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = subparsers.add_parser(
        "validate", help="served ensemble vs in-process PyTorch on real photos (skew check)"
    )
    validate.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    validate.add_argument("--url", default="localhost:8001")
    validate.add_argument("--images", type=Path, default=None, help="default: sample photos")
    validate.add_argument("--spec", default="tvision_export.spec:EFFICIENTNET_LITE0")
    validate.add_argument("--model", default=None, help="ensemble name (default: the spec's)")
    validate.add_argument("--min-top1-agreement", type=float, default=None)
    validate.add_argument("--max-probability-diff", type=float, default=None)
    validate.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    from tvision import validate
    from tvision_client import ClientError
    from tvision_export.spec import load_spec

    min_agreement = (
        validate.DEFAULT_MIN_TOP1_AGREEMENT
        if args.min_top1_agreement is None
        else args.min_top1_agreement
    )
    max_diff = (
        validate.DEFAULT_MAX_PROBABILITY_DIFF
        if args.max_probability_diff is None
        else args.max_probability_diff
    )
    try:
        images = validate.collect_images(args.images)
        outcome = validate.validate_served(
            load_spec(args.spec), args.repository, args.url, images, args.model
        )
    except (FileNotFoundError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(validate.render(outcome, min_agreement, max_diff))
    return 0 if outcome.passed(min_agreement, max_diff) else 1


# -- bench -----------------------------------------------------------------------------


def _add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench", help="served ensemble vs in-process limit, client-side and naive paths"
    )
    parser.add_argument("--quick", action="store_true", help="short runs (under 2 minutes)")
    parser.add_argument("--duration-s", type=float, default=None, help="seconds per run")
    parser.add_argument("--concurrency", type=_int_list, default=(1, 4, 16, 32))
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change an exported serving option for this run, e.g. classifier_instances=1",
    )
    parser.add_argument(
        "--paths",
        type=lambda text: tuple(part for part in text.split(",") if part),
        default=("limit", "served", "client-side", "naive"),
        help="comma-separated subset of limit,served,client-side,naive (ratios need all)",
    )
    parser.set_defaults(handler=_run_bench)

    preprocess = subparsers.add_parser(
        "bench-preprocess", help="preprocessing cost per image, each speed-up against its baseline"
    )
    preprocess.add_argument("--repeats", type=_positive_int, default=20)
    preprocess.set_defaults(handler=_run_bench_preprocess)

    sdk = subparsers.add_parser("bench-sdk", help="the SDK against raw tritonclient")
    sdk.add_argument("--concurrency", type=_positive_int, default=8)
    sdk.add_argument("--rounds", type=_positive_int, default=3)
    sdk.add_argument("--duration-s", type=float, default=5.0)
    sdk.add_argument("--json", type=Path, default=None)
    sdk.set_defaults(handler=_run_bench_sdk)


def _run_bench(args: argparse.Namespace) -> int:
    from tvision.bench.render import plot, render_table
    from tvision.bench.run import check_request, run_benchmark
    from tvision_export.configs import ServingOptions

    try:
        check_request(args.paths, args.concurrency)
        overrides = ServingOptions.parse_assignments(args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = run_benchmark(
        quick=args.quick,
        concurrencies=args.concurrency,
        duration_s=args.duration_s,
        progress=lambda message: print(f"[bench] {message}", file=sys.stderr, flush=True),
        overrides=overrides,
        paths=args.paths,
    )
    print(render_table(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    if args.plot:
        plot(report, args.plot)
    return 0


def _run_bench_preprocess(args: argparse.Namespace) -> int:
    from tvision.bench.preprocess import render_preprocess_table, run_preprocess_benchmark

    print(render_preprocess_table(run_preprocess_benchmark(args.repeats)))
    return 0


def _run_bench_sdk(args: argparse.Namespace) -> int:
    from tvision.bench.sdk import render_sdk_table, run_sdk_benchmark

    report = run_sdk_benchmark(
        concurrency=args.concurrency,
        rounds=args.rounds,
        duration_s=args.duration_s,
        progress=lambda message: print(f"[bench-sdk] {message}", file=sys.stderr, flush=True),
    )
    print(render_sdk_table(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0


# -- entry point -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvision", description="Image classification on NVIDIA Triton Inference Server."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_export(subparsers)
    _add_serve(subparsers)
    _add_classify(subparsers)
    _add_demo(subparsers)
    _add_bench(subparsers)
    _add_repo(subparsers)
    _add_validate(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
