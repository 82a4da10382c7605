"""The ``tvision`` command: export, serve, classify.

A thin layer over library functions; heavy modules are imported inside the subcommands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tvision_export.verify import Problem

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
    parser.add_argument(
        "--repository",
        default=str(DEFAULT_REPOSITORY),
        help="a directory (a new version is added), or s3://BUCKET/PREFIX (pushed as a snapshot)",
    )
    _endpoint_argument(parser)
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
    """Export into a local repository, or into a temporary one that is then pushed."""
    import tempfile

    from tvision_export import snapshots

    if not snapshots.is_remote(args.repository):
        args.repository = Path(args.repository)
        return _run_local_export(args)
    remote = args.repository
    with tempfile.TemporaryDirectory(prefix="tvision-export-") as work_dir:
        args.repository = Path(work_dir) / "model_repository"
        code = _run_local_export(args)
        if code != 0:
            return code
        return _push(args.repository, remote, args.endpoint_url)


def _run_local_export(args: argparse.Namespace) -> int:
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
    parser.add_argument(
        "--repository",
        default=str(DEFAULT_REPOSITORY),
        help="a directory, or an s3:// snapshot URI as 'tvision repo push' prints it",
    )
    _endpoint_argument(parser)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--ready-timeout-s", type=float, default=240.0)
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also answer GET /ready (200 only while every model's stubs are alive) and "
        "GET /live on this port",
    )
    locked = parser.add_argument_group(
        "admin APIs and TLS (model control, shared memory, statistics, trace and logging are "
        "closed by default, behind a key made for each start and never shown)"
    )
    admin = locked.add_mutually_exclusive_group()
    admin.add_argument(
        "--admin-key-env",
        metavar="NAME",
        default=None,
        help="use the key held in environment variable NAME instead, so that you can call the "
        "admin APIs (HTTP header 'tvision-admin-key', gRPC metadata "
        "'triton-grpc-protocol-tvision-admin-key')",
    )
    admin.add_argument(
        "--open-admin-apis",
        action="store_true",
        help="leave the admin APIs open to anyone who can connect (loopback only; refused on "
        "any other address): anyone who reaches the HTTP port can then load code",
    )
    locked.add_argument("--grpc-tls-cert", type=Path, default=None, help="server certificate PEM")
    locked.add_argument("--grpc-tls-key", type=Path, default=None, help="server private key PEM")
    locked.add_argument(
        "--grpc-tls-client-ca",
        type=Path,
        default=None,
        help="also require client certificates signed by this CA (mutual TLS)",
    )
    parser.set_defaults(handler=_run_serve)


def _lockdown(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The admin key and the TLS flags ``tvision serve`` was asked for.

    Raises:
        ValueError: a named variable or file is missing, or only half of a pair is given.
    """
    admin_key = None
    if args.admin_key_env is not None:
        from tvision.server import MIN_ADMIN_KEY_CHARS

        admin_key = os.environ.get(args.admin_key_env, "")
        if len(admin_key) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(
                f"--admin-key-env {args.admin_key_env}: the variable must hold a key of at "
                f"least {MIN_ADMIN_KEY_CHARS} characters (e.g. export NAME=$(openssl rand -hex 32))"
            )
    if (args.grpc_tls_cert is None) != (args.grpc_tls_key is None):
        raise ValueError("--grpc-tls-cert and --grpc-tls-key go together")
    if args.grpc_tls_client_ca is not None and args.grpc_tls_cert is None:
        raise ValueError("--grpc-tls-client-ca needs --grpc-tls-cert and --grpc-tls-key")
    tls: list[str] = []
    if args.grpc_tls_cert is not None:
        files = [args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca]
        for path in files:
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")
        tls = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={args.grpc_tls_cert.resolve()}",
            f"--grpc-server-key={args.grpc_tls_key.resolve()}",
        ]
        if args.grpc_tls_client_ca is not None:
            tls += [
                "--grpc-use-ssl-mutual=true",
                f"--grpc-root-cert={args.grpc_tls_client_ca.resolve()}",
            ]
    return admin_key, tls


def _run_serve(args: argparse.Namespace) -> int:
    from tvision.server import ServerError, ServerPorts, TritonServer

    ports = ServerPorts(grpc=args.grpc_port, http=args.http_port, metrics=args.metrics_port)
    try:
        repository = _served_repository(args.repository, args.endpoint_url)
        admin_key, tls_args = _lockdown(args)
        server = TritonServer(
            repository,
            ports,
            address=args.address,
            admin_key=admin_key,
            open_admin_apis=args.open_admin_apis,
            extra_args=tls_args,
        )
    except (ValueError, ServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    if args.open_admin_apis:
        print("admin APIs: OPEN to anyone who can connect (--open-admin-apis)", file=sys.stderr)
    elif admin_key:
        print("admin APIs: restricted (the key in $" + args.admin_key_env + ")", file=sys.stderr)
    else:
        print("admin APIs: closed (a key made for this start)", file=sys.stderr)
    if tls_args:
        print("gRPC: TLS", file=sys.stderr)
    print(
        f"ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}\n"
        f"log: {server.log_path}\npress Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    health = None
    if args.health_port is not None:
        from tvision.health import HealthEndpoint

        health = HealthEndpoint(server, args.address, args.health_port).start()
        print(f"health: http://{args.address}:{args.health_port}/ready", file=sys.stderr)
    try:
        while not stop.wait(1.0):
            if server.process is None or server.process.poll() is not None:
                print(f"tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
            for heal in server.watchdog.heals if server.watchdog else []:
                if not heal.reported:
                    heal.reported = True
                    state = (
                        f"reloaded in {heal.recovered_s:.1f} s"
                        if heal.recovered_s is not None
                        else f"reload failed: {heal.error}"
                    )
                    print(f"a stub of {heal.model} died; {state}", file=sys.stderr, flush=True)
    finally:
        if health is not None:
            health.stop()
        code = server.stop()
    print(f"stopped (tritonserver exit code {code})", file=sys.stderr)
    return 0


def _served_repository(repository: str, endpoint_url: str | None) -> str | Path:
    """A local path, or a complete remote snapshot as Triton's --model-repository spells it.

    Raises:
        ValueError: a remote location that is not a complete snapshot, or unreachable.
    """
    from tvision_export import snapshots

    if not snapshots.is_remote(repository):
        return Path(repository)
    try:
        location = snapshots.StoreLocation.parse(repository, endpoint_url)
        snapshots.require_complete(location)
    except snapshots.StoreError as exc:
        raise ValueError(str(exc)) from exc
    return location.triton_uri()


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


def _endpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL or AWS)",
    )


def _add_repo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repo = subparsers.add_parser("repo", help="model repository tools, local or in s3://")
    repo_commands = repo.add_subparsers(dest="repo_command", required=True)
    verify = repo_commands.add_parser(
        "verify", help="check configs, files, checksums, wiring (a directory or an s3:// snapshot)"
    )
    verify.add_argument("repository", nargs="?", default=str(DEFAULT_REPOSITORY))
    _endpoint_argument(verify)
    verify.set_defaults(handler=_run_repo_verify)

    push = repo_commands.add_parser("push", help="upload a repository as an immutable snapshot")
    push.add_argument("local", type=Path)
    push.add_argument("uri", help="s3://BUCKET/PREFIX (snapshots go under PREFIX/snapshots/)")
    _endpoint_argument(push)
    push.set_defaults(handler=_run_repo_push)

    listing = repo_commands.add_parser("list", help="snapshots under s3://BUCKET/PREFIX")
    listing.add_argument("uri")
    _endpoint_argument(listing)
    listing.set_defaults(handler=_run_repo_list)

    gc = repo_commands.add_parser("gc", help="remove all but the newest snapshots")
    gc.add_argument("uri")
    gc.add_argument("--keep", type=int, required=True, help="newest complete snapshots to keep")
    gc.add_argument(
        "--protect", action="append", default=[], metavar="ID_OR_URI", help="never remove this"
    )
    gc.add_argument(
        "--kustomization",
        action="append",
        default=[],
        type=Path,
        help="never remove a snapshot named in this file (repeatable)",
    )
    gc.add_argument("--dry-run", action="store_true")
    _endpoint_argument(gc)
    gc.set_defaults(handler=_run_repo_gc)


def _print_problems(where: str, problems: list[Problem]) -> int:
    from tvision_export.verify import first_of_each_kind

    if not problems:
        print(f"OK: {where} passed every check")
        return 0
    print(f"FAILED: {len(problems)} problem(s) in {where}")
    for problem, count in first_of_each_kind(problems):
        more = f"  (+{count - 1} more of this kind)" if count > 1 else ""
        print(f"  {problem}{more}")
    return 1


def _run_repo_verify(args: argparse.Namespace) -> int:
    from tvision_export import snapshots
    from tvision_export.verify import verify_repository

    if not snapshots.is_remote(args.repository):
        return _print_problems(args.repository, verify_repository(Path(args.repository)))
    try:
        location = snapshots.StoreLocation.parse(args.repository, args.endpoint_url)
        with _transfer_progress("downloading") as progress:
            problems = snapshots.verify_snapshot(location, progress)
    except snapshots.StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _print_problems(location.uri(), problems)


def _run_repo_push(args: argparse.Namespace) -> int:
    return _push(args.local, args.uri, args.endpoint_url)


def _push(local: Path, uri: str, endpoint_url: str | None) -> int:
    """Push ``local`` as a snapshot under ``uri``, with a progress bar, and say where."""
    from tvision_export import snapshots

    try:
        root = snapshots.StoreLocation.parse(uri, endpoint_url)
        with _transfer_progress("uploading") as progress:
            result = snapshots.push(local, root, progress)
    except snapshots.StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.already_complete:
        print("already in the store: this exact repository was pushed before (unchanged)")
    else:
        print(
            f"uploaded {result.uploaded_files} files ({result.uploaded_bytes / 1e6:.1f} MB), "
            f"copied {result.copied_files} inside the store, skipped {result.skipped_files} "
            "already there"
        )
    print(f"snapshot: {result.location.uri()}")
    print(f"triton --model-repository: {result.location.triton_uri()}")
    return 0


def _run_repo_list(args: argparse.Namespace) -> int:
    from tvision_export import snapshots

    try:
        root = snapshots.StoreLocation.parse(args.uri, args.endpoint_url)
        infos = snapshots.list_snapshots(root.root)
    except snapshots.StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not infos:
        print(f"no snapshots under {root.root.uri()}")
        return 0
    print(f"{'snapshot':<18}{'created':<22}{'size MB':>9}  models (versions)")
    for info in infos:
        sid = info.location.snapshot_id or "?"
        if info.manifest is None:
            print(f"{sid:<18}{'INCOMPLETE':<22}{'':>9}  (no manifest: interrupted push)")
            continue
        models = ", ".join(
            f"{name} ({','.join(map(str, versions))})"
            for name, versions in info.manifest.models.items()
        )
        print(
            f"{sid:<18}{info.manifest.created:<22}{info.manifest.size_bytes / 1e6:>9.1f}  {models}"
        )
    return 0


def _run_repo_gc(args: argparse.Namespace) -> int:
    from tvision_export import snapshots

    try:
        root = snapshots.StoreLocation.parse(args.uri, args.endpoint_url).root
        kept, removed = snapshots.garbage_collect(
            root, args.keep, args.protect, args.kustomization, args.dry_run
        )
    except (snapshots.StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verb = "would remove" if args.dry_run else "removed"
    for info in removed:
        print(f"{verb} {info.location.uri()}")
    print(f"kept {len(kept)} snapshot(s), {verb} {len(removed)}")
    return 0


@contextlib.contextmanager
def _transfer_progress(verb: str) -> Iterator[Callable[[str, int, int, int, int], None]]:
    """A progress bar of bytes and files on standard error, for uploads and downloads."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(verb, total=None, files="")

        def update(name: str, done: int, total: int, files_done: int, files: int) -> None:
            bar.update(task, completed=done, total=total, files=f"{files_done}/{files} files")

        yield update


# -- validate ---------------------------------------------------------------------------


def _add_validate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = subparsers.add_parser(
        "validate", help="served ensemble vs in-process PyTorch on real photos (skew check)"
    )
    validate.add_argument(
        "--repository", default=str(DEFAULT_REPOSITORY), help="a directory or an s3:// snapshot"
    )
    _endpoint_argument(validate)
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
    from tvision_export import snapshots

    try:
        images = validate.collect_images(args.images)
        with contextlib.ExitStack() as stack:
            repository = Path(args.repository)
            if snapshots.is_remote(args.repository):
                repository = stack.enter_context(
                    snapshots.local_configs(args.repository, args.endpoint_url)
                )
            outcome = validate.validate_served(
                load_spec(args.spec), repository, args.url, images, args.model
            )
    except (FileNotFoundError, ClientError, snapshots.StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(validate.render(outcome, min_agreement, max_diff))
    return 0 if outcome.passed(min_agreement, max_diff) else 1


# -- fidelity --------------------------------------------------------------------------


def _add_fidelity(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        type=lambda text: tuple(part for part in text.split(",") if part),
        default=tuple(DECODE_HEADROOM),
        help=f"comma-separated; default all ({','.join(DECODE_HEADROOM)})",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.set_defaults(handler=_run_fidelity, default_decode=DEFAULT_DECODE)


def _run_fidelity(args: argparse.Namespace) -> int:
    from tvision import fidelity
    from tvision.validate import latest_classifier_onnx
    from tvision_export.spec import DEFAULT_SPEC

    def progress(message: str) -> None:
        print(f"[fidelity] {message}", file=sys.stderr, flush=True)

    try:
        onnx_path = latest_classifier_onnx(args.repository, DEFAULT_SPEC.name)
        if args.build:
            sizes = "quirks" if args.quirks_only else "all"
            fidelity.build_photo_set(args.photos, sizes, progress=progress)
        images = sorted(path for path in args.photos.iterdir() if path.is_file())
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = fidelity.measure(
        DEFAULT_SPEC, onnx_path, images, args.strategies, args.default_decode, progress
    )
    print(fidelity.render(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0


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


def _emit(table: str, report: dict[str, Any], json_path: Path | None) -> None:
    """Print a command's table, and write its report as JSON when asked to."""
    print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


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
    _emit(render_table(report), report.to_json(), args.json)
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
    _emit(render_sdk_table(report), report.to_json(), args.json)
    return 0


def _add_plan(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="CPU cores and pods for a rate of images per second (preprocessing measured here)",
    )
    parser.add_argument("--target", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument(
        "--rate", type=float, nargs="+", required=True, help="images per second to plan for"
    )
    parser.add_argument(
        "--gpu-img-s", type=float, default=None,
        help="classifier throughput of one pod's GPU, img/s (measured elsewhere; "
        "`tvision gpu-check` measures it on a GPU node)",
    )  # fmt: skip
    parser.add_argument("--gpu-source", default="", help="where the --gpu-img-s figure is from")
    parser.add_argument(
        "--max-cores-per-pod", type=int, default=16,
        help="the most CPU cores one pod may request (a node's size); more pods beyond it",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from tvision.plan import make_plan, render_plan

    numbers = [*args.rate, args.gpu_img_s or 1.0, args.max_cores_per_pod]
    if any(number <= 0 for number in numbers) or args.max_cores_per_pod < 2:
        print("error: --rate, --gpu-img-s and --max-cores-per-pod (>= 2) must be positive",
              file=sys.stderr)  # fmt: skip
        return 2
    plan = make_plan(
        args.rate, args.target, args.gpu_img_s, args.gpu_source, args.repeats,
        args.max_cores_per_pod,
    )  # fmt: skip
    _emit(render_plan(plan), plan.to_json(), args.json)
    return 0


def _add_gpu_check(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tvision.gpu_check import DEFAULT_IMAGE

    parser = subparsers.add_parser(
        "gpu-check",
        help="the gpu target on a real GPU: served vs client-side vs the in-process limit "
        "(fails, never skips, without a GPU)",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="the serving image (Docker)")
    parser.add_argument("--url", default=None, help="HOST:PORT of a Triton you started instead")
    parser.add_argument("--no-fp16", dest="fp16", action="store_false", help="no TensorRT FP16")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=_int_list, default=(16, 64))
    parser.add_argument("--ready-timeout-s", type=float, default=1800.0)
    parser.set_defaults(handler=_run_gpu_check)


def _run_gpu_check(args: argparse.Namespace) -> int:
    from tvision.gpu_check import GpuCheckError, render_gpu_check, run_gpu_check

    try:
        report = run_gpu_check(
            args.image, args.url, args.fp16, args.duration_s, tuple(args.concurrency),
            args.ready_timeout_s,
        )  # fmt: skip
    except GpuCheckError as exc:
        print(f"GPU CHECK FAILED: {exc}", file=sys.stderr)
        return 2
    print(render_gpu_check(report))
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
    _add_fidelity(subparsers)
    _add_plan(subparsers)
    _add_gpu_check(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
