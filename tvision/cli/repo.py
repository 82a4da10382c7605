"""``tvision repo verify|push|list|gc``: model repositories, in a directory or in s3://."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tvision.cli._common import (
    DEFAULT_REPOSITORY,
    Subparsers,
    endpoint_argument,
    fail,
    stderr_console,
)
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_OK

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import TaskID

    from tvision_export.verify import Problem


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    repo = subparsers.add_parser("repo", help="model repository tools, local or in s3://")
    commands = repo.add_subparsers(dest="repo_command", required=True)
    verify = commands.add_parser(
        "verify", help="check configs, files, checksums, wiring (a directory or an s3:// snapshot)"
    )
    verify.add_argument("repository", nargs="?", default=str(DEFAULT_REPOSITORY))
    endpoint_argument(verify)
    verify.set_defaults(handler=run_verify)

    push = commands.add_parser("push", help="upload a repository as an immutable snapshot")
    push.add_argument("local", type=Path)
    push.add_argument("uri", help="s3://BUCKET/PREFIX (snapshots go under PREFIX/snapshots/)")
    endpoint_argument(push)
    push.set_defaults(handler=run_push)

    listing = commands.add_parser("list", help="snapshots under s3://BUCKET/PREFIX")
    listing.add_argument("uri")
    endpoint_argument(listing)
    listing.set_defaults(handler=run_list)

    gc = commands.add_parser("gc", help="remove all but the newest snapshots")
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
    endpoint_argument(gc)
    gc.set_defaults(handler=run_gc)


def _print_problems(where: str, problems: list[Problem]) -> int:
    from tvision_export.verify import first_of_each_kind

    if not problems:
        print(f"OK: {where} passed every check")
        return EXIT_OK
    print(f"FAILED: {len(problems)} problem(s) in {where}")
    for problem, count in first_of_each_kind(problems):
        more = f"  (+{count - 1} more of this kind)" if count > 1 else ""
        print(f"  {problem}{more}")
    return EXIT_CHECK_FAILED


def run_verify(args: argparse.Namespace) -> int:
    from tvision.cli._policy import require_directory
    from tvision_export import snapshots
    from tvision_export.verify import verify_repository

    try:
        if not snapshots.is_remote(args.repository):
            local = require_directory(args.repository)
            return _print_problems(args.repository, verify_repository(local))
        location = snapshots.StoreLocation.parse(args.repository, args.endpoint_url)
        with transfer_progress("downloading") as progress:
            problems = snapshots.verify_snapshot(location, progress)
    except (snapshots.StoreError, FileNotFoundError) as exc:
        return fail(exc)
    return _print_problems(location.uri(), problems)


def run_push(args: argparse.Namespace) -> int:
    return push_snapshot(args.local, args.uri, args.endpoint_url)


def push_snapshot(local: Path, uri: str, endpoint_url: str | None) -> int:
    """Push ``local`` as a snapshot under ``uri``, with a progress bar, and say where."""
    from tvision_export import snapshots

    try:
        root = snapshots.StoreLocation.parse(uri, endpoint_url)
        with transfer_progress("uploading") as progress:
            result = snapshots.push(local, root, progress)
    except snapshots.StoreError as exc:
        return fail(exc)
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
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    from tvision.cli._policy import render_snapshots
    from tvision_export import snapshots

    try:
        root = snapshots.StoreLocation.parse(args.uri, args.endpoint_url).root
        infos = snapshots.list_snapshots(root)
    except snapshots.StoreError as exc:
        return fail(exc)
    print(render_snapshots(root.uri(), infos))
    return EXIT_OK


def run_gc(args: argparse.Namespace) -> int:
    from tvision_export import snapshots

    try:
        root = snapshots.StoreLocation.parse(args.uri, args.endpoint_url).root
        kept, removed = snapshots.garbage_collect(
            root, args.keep, args.protect, args.kustomization, args.dry_run
        )
    except (snapshots.StoreError, ValueError, OSError) as exc:
        return fail(exc)
    verb = "would remove" if args.dry_run else "removed"
    for info in removed:
        print(f"{verb} {info.location.uri()}")
    print(f"kept {len(kept)} snapshot(s), {verb} {len(removed)}")
    return EXIT_OK


@contextlib.contextmanager
def transfer_progress(verb: str) -> Iterator[Callable[[str, int, int, int, int], None]]:
    """A progress bar of bytes and files on standard error, for uploads and downloads,
    drawn from the first file on: an error before any work (no bucket, no credentials)
    is said alone, under no empty bar."""
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
    with contextlib.ExitStack() as started:
        bars: list[tuple[Progress, TaskID]] = []

        def update(name: str, done: int, total: int, files_done: int, files: int) -> None:
            if not bars:
                bar = started.enter_context(
                    Progress(*columns, console=stderr_console(), transient=False)
                )
                bars.append((bar, bar.add_task(verb, total=None, files="")))
            bar, task = bars[0]
            bar.update(task, completed=done, total=total, files=f"{files_done}/{files} files")

        yield update
