"""Model repository snapshots in object storage (``s3://`` and S3-compatible stores).

Layout under a root URI ``s3://BUCKET/PREFIX``::

    PREFIX/snapshots/<digest>/           one snapshot: a complete Triton model repository
        NAME/config.pbtxt  NAME/1/...    the local repository's files, byte for byte
        tvision-snapshot.json            written last: every file's sha256 and size

A snapshot is named by its content (``digest``, from every file's path and sha256), so
pushing the same repository twice names the same snapshot, and one never changes once its
manifest exists. The manifest is written after every object, so an interrupted push leaves
no complete snapshot; ``verify`` rejects one without a manifest, and re-running the push
completes it, skipping the objects already uploaded intact. Objects that a complete snapshot
already holds with the same sha256 are copied inside the store, not uploaded again.

Triton reads a snapshot natively: ``--model-repository=s3://http://HOST:PORT/BUCKET/PREFIX``
for an S3-compatible endpoint (``triton_uri``). Credentials come only from the standard
places (environment, the AWS shared files, a Secret mounted as environment), through
botocore; nothing here prints or stores them.

Storage goes through fsspec and s3fs, imported only by the functions that need them.

The parts, each in its module and every public name re-exported here: the store
(``snapshot_store``: location, filesystem, errors), the manifest (``snapshot_manifest``),
the push (``snapshot_push``); listing, fetching, verifying and gc are here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvision_export.repository import sha256_of
from tvision_export.snapshot_manifest import (
    DIGEST_CHARS,
    SNAPSHOT_MANIFEST,
    SnapshotFile,
    SnapshotManifest,
    local_manifest,
    read_manifest,
)
from tvision_export.snapshot_push import PushResult, push
from tvision_export.snapshot_store import (
    ENDPOINT_VARIABLES,
    SNAPSHOTS_DIR,
    Progress,
    StoreError,
    StoreLocation,
    filesystem,
    objects_under,
    require_bucket,
    snapshot_ids,
    store_errors,
)
from tvision_export.verify import Problem

__all__ = [
    "DIGEST_CHARS",
    "ENDPOINT_VARIABLES",
    "SNAPSHOTS_DIR",
    "SNAPSHOT_MANIFEST",
    "Progress",
    "PushResult",
    "SnapshotFile",
    "SnapshotInfo",
    "SnapshotManifest",
    "StoreError",
    "StoreLocation",
    "fetch",
    "filesystem",
    "garbage_collect",
    "is_remote",
    "list_snapshots",
    "local_configs",
    "local_manifest",
    "push",
    "require_complete",
    "store_errors",
    "verify_snapshot",
]


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for a repository in an object store, as Triton's ``--model-repository`` spells
    one (``s3://``, ``gs://``, ``as://``), never a path on this machine: the one definition
    the server and the commands use. Snapshots (push, verify, list) are S3 only:
    ``StoreLocation.parse`` refuses the other two with a StoreError that names the URI."""
    return str(location).startswith(("s3://", "gs://", "as://"))


# -- list, fetch, verify, gc ---------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotInfo:
    location: StoreLocation
    manifest: SnapshotManifest | None  # None: incomplete (no manifest yet)

    @property
    def complete(self) -> bool:
        return self.manifest is not None


def list_snapshots(root: StoreLocation) -> list[SnapshotInfo]:
    """Every snapshot under ``root``, newest complete first, then the incomplete ones.

    Raises:
        StoreError: the store refused or could not be reached.
    """
    fs = filesystem(root)
    with store_errors(root, "list"):
        require_bucket(fs, root)
        infos = [
            SnapshotInfo(root.snapshot(sid), read_manifest(fs, root.snapshot(sid)))
            for sid in snapshot_ids(fs, root)
        ]
    return sorted(
        infos,
        key=lambda info: (info.complete, info.manifest.created if info.manifest else ""),
        reverse=True,
    )


def fetch(
    snapshot: StoreLocation,
    destination: Path,
    progress: Progress = lambda *_args: None,
    only: Callable[[str], bool] = lambda _path: True,
) -> SnapshotManifest:
    """Download a complete snapshot (or the files ``only`` accepts) into ``destination``.

    Raises:
        StoreError: the location names no snapshot, it has no manifest (an interrupted
            push: re-run it), or the store refused or could not be reached.
    """
    _require_snapshot_uri(snapshot)
    fs = filesystem(snapshot)
    with store_errors(snapshot, "fetch"):
        manifest = _complete_manifest(fs, snapshot)
        wanted = [file for file in manifest.files if only(file.path)]
        total = sum(file.size_bytes for file in wanted)
        done = 0
        for number, file in enumerate(wanted):
            target = destination / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            progress(file.path, done, total, number, len(wanted))
            fs.get_file(snapshot.key(file.path), str(target))
            done += file.size_bytes
        progress("done", done, total, len(wanted), len(wanted))
    return manifest


def verify_snapshot(
    snapshot: StoreLocation, progress: Progress = lambda *_args: None
) -> list[Problem]:
    """Every problem with a remote snapshot: its manifest's checksums and content digest,
    then every check ``verify`` makes on a local repository.

    Raises:
        StoreError: the snapshot cannot be read (missing, incomplete, unreachable).
    """
    from tvision_export.verify import Problem, verify_repository

    with tempfile.TemporaryDirectory(prefix="tvision-verify-") as work_dir:
        local = Path(work_dir)
        manifest = fetch(snapshot, local, progress)
        problems = [
            Problem("checksums", file.path, "sha256 differs from the snapshot manifest")
            for file in manifest.files
            if sha256_of(local / file.path) != file.sha256
        ]
        recomputed = local_manifest(local).snapshot_id
        if recomputed != manifest.snapshot_id or snapshot.snapshot_id != manifest.snapshot_id:
            problems.append(
                Problem(
                    "checksums",
                    snapshot.uri(),
                    f"content digest is {recomputed}, the manifest says {manifest.snapshot_id}",
                )
            )
        problems.extend(verify_repository(local))
    return problems


def garbage_collect(
    root: StoreLocation,
    keep: int,
    protect: Sequence[str] = (),
    kustomizations: Sequence[Path] = (),
    dry_run: bool = False,
) -> tuple[list[SnapshotInfo], list[SnapshotInfo]]:
    """Remove all but the ``keep`` newest complete snapshots, never a protected one.

    A snapshot is protected when its id (or URI) is in ``protect`` or appears in one of the
    ``kustomizations`` files' text. Incomplete snapshots are left alone: one may be a push
    in progress. Returns (kept, removed).

    Raises:
        StoreError: the store refused or could not be reached.
        ValueError: ``keep`` is negative.
    """
    if keep < 0:
        raise ValueError(f"--keep must be 0 or more, got {keep}")
    texts = [path.read_text(encoding="utf-8") for path in kustomizations]
    protected = {item.rstrip("/").rsplit("/", 1)[-1] for item in protect}
    snapshots = list_snapshots(root)
    complete = [info for info in snapshots if info.complete]
    kept: list[SnapshotInfo] = []
    removed: list[SnapshotInfo] = []
    for index, info in enumerate(complete):
        sid = info.location.snapshot_id or ""
        if index < keep or sid in protected or any(sid in text for text in texts):
            kept.append(info)
        else:
            removed.append(info)
    kept.extend(info for info in snapshots if not info.complete)
    if not dry_run:
        fs = filesystem(root)
        with store_errors(root, "gc"):
            for info in removed:
                # The manifest first: a half-removed snapshot is then incomplete, never a
                # complete snapshot with files missing.
                fs.rm_file(info.location.key(SNAPSHOT_MANIFEST))
                fs.rm(info.location.key(), recursive=True)
    return kept, removed


def require_complete(snapshot: StoreLocation) -> SnapshotManifest:
    """The snapshot's manifest, read from the store.

    Raises:
        StoreError: not a snapshot URI, missing, incomplete, or the store is unreachable.
    """
    _require_snapshot_uri(snapshot)
    fs = filesystem(snapshot)
    with store_errors(snapshot, "read"):
        return _complete_manifest(fs, snapshot)


def _complete_manifest(fs: Any, snapshot: StoreLocation) -> SnapshotManifest:
    manifest = read_manifest(fs, snapshot)
    if manifest is None:
        if not objects_under(fs, snapshot):
            raise FileNotFoundError(f"snapshot {snapshot.snapshot_id} does not exist")
        raise StoreError(
            f"snapshot {snapshot.uri()} is incomplete: it has no {SNAPSHOT_MANIFEST} "
            "(a push was interrupted; re-run the same push to complete it)"
        )
    return manifest


def _require_snapshot_uri(snapshot: StoreLocation) -> None:
    if snapshot.snapshot_id is None:
        raise StoreError(
            f"{snapshot.uri()} names no snapshot; use the URI 'tvision repo push' printed, "
            f"or pick one with 'tvision repo list {snapshot.uri()}'"
        )


@contextlib.contextmanager
def local_configs(location: str, endpoint_url: str | None = None) -> Iterator[Path]:
    """A local directory holding a remote snapshot's configs and labels (for validate)."""
    snapshot = StoreLocation.parse(location, endpoint_url)
    work_dir = Path(tempfile.mkdtemp(prefix="tvision-configs-"))
    try:
        fetch(snapshot, work_dir, only=lambda path: path.count("/") == 1)
        yield work_dir
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
