"""``push``: a local repository up as a snapshot, resumable, the manifest last."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvision_export.snapshot_manifest import (
    SNAPSHOT_MANIFEST,
    SnapshotFile,
    local_manifest,
    read_manifest,
)
from tvision_export.snapshot_store import (
    Progress,
    StoreError,
    StoreLocation,
    filesystem,
    objects_under,
    require_bucket,
    snapshot_ids,
    store_errors,
)


@dataclass(frozen=True)
class PushResult:
    location: StoreLocation  # the snapshot
    already_complete: bool
    uploaded_files: int
    uploaded_bytes: int
    copied_files: int
    skipped_files: int


def push(
    repository: Path,
    root: StoreLocation,
    progress: Progress = lambda *_args: None,
) -> PushResult:
    """Upload ``repository`` as a snapshot under ``root``; the manifest goes last.

    Raises:
        StoreError: the local repository fails ``verify``, or the store refused or could
            not be reached; the message names the problem.
    """
    from tvision_export.verify import verify_repository

    problems = verify_repository(repository)
    if problems:
        listed = "; ".join(str(problem) for problem in problems[:3])
        raise StoreError(f"{repository} fails verify ({len(problems)} problems): {listed}")
    manifest = local_manifest(repository)
    snapshot = root.snapshot(manifest.snapshot_id)
    fs = filesystem(root)
    with store_errors(root, "push"):
        require_bucket(fs, root)
        if fs.exists(snapshot.key(SNAPSHOT_MANIFEST)):
            return PushResult(snapshot, True, 0, 0, 0, len(manifest.files))
        present = objects_under(fs, snapshot)
        known = _known_objects(fs, root)
        total_bytes = manifest.size_bytes
        done_bytes = uploaded_bytes = uploaded = copied = skipped = 0
        for number, file in enumerate(manifest.files):
            key = snapshot.key(file.path)
            progress(f"{file.path}", done_bytes, total_bytes, number, len(manifest.files))
            existing = present.get(key)
            if existing is not None and _same_object(existing, file):
                skipped += 1
            elif file.sha256 in known:
                fs.copy(known[file.sha256], key)
                copied += 1
            else:
                base = done_bytes

                def report(
                    sent: int, name: str = file.path, base: int = base, number: int = number
                ) -> None:
                    progress(name, base + sent, total_bytes, number, len(manifest.files))

                fs.put_file(str(repository / file.path), key, callback=_progress_callback(report))
                uploaded += 1
                uploaded_bytes += file.size_bytes
            done_bytes += file.size_bytes
        progress("manifest", done_bytes, total_bytes, len(manifest.files), len(manifest.files))
        fs.pipe_file(snapshot.key(SNAPSHOT_MANIFEST), manifest.to_json().encode())
    return PushResult(snapshot, False, uploaded, uploaded_bytes, copied, skipped)


def _progress_callback(report: Callable[[int], None]) -> Any:
    """An fsspec callback that reports the bytes transferred so far."""
    from fsspec.callbacks import Callback

    return Callback(hooks={"report": lambda _size, value, **_kwargs: report(int(value))})


def _same_object(info: dict[str, Any], file: SnapshotFile) -> bool:
    """An object uploaded whole: same size and, for a single-part upload, same MD5."""
    etag = str(info.get("ETag", "")).strip('"')
    return int(info.get("size", -1)) == file.size_bytes and etag == file.md5


def _known_objects(fs: Any, root: StoreLocation) -> dict[str, str]:
    """sha256 -> key of an object in a complete snapshot, for copies inside the store."""
    known: dict[str, str] = {}
    for snapshot_id in snapshot_ids(fs, root):
        snapshot = root.snapshot(snapshot_id)
        manifest = read_manifest(fs, snapshot)
        if manifest is not None:
            for file in manifest.files:
                known.setdefault(file.sha256, snapshot.key(file.path))
    return known
