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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvision_export import contract
from tvision_export.repository import sha256_of
from tvision_export.verify import Problem

SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_MANIFEST = "tvision-snapshot.json"
DIGEST_CHARS = 16
# Standard variables botocore reads for a custom endpoint, most specific first.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

# (what is happening, bytes done, bytes in all, files done, files in all)
Progress = Callable[[str, int, int, int, int], None]


class StoreError(Exception):
    """The object store could not do what was asked; the message says what and why."""


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for a repository in an object store, as Triton's ``--model-repository`` spells
    one (``s3://``, ``gs://``, ``as://``), never a path on this machine: the one definition
    the server and the commands use. Snapshots (push, verify, list) are S3 only:
    ``StoreLocation.parse`` refuses the other two with a StoreError that names the URI."""
    return str(location).startswith(("s3://", "gs://", "as://"))


@dataclass(frozen=True)
class StoreLocation:
    """``s3://BUCKET/PREFIX`` plus the endpoint of an S3-compatible store (None: AWS)."""

    bucket: str
    prefix: str
    endpoint_url: str | None = None

    @classmethod
    def parse(cls, uri: str, endpoint_url: str | None = None) -> StoreLocation:
        """Accept ``s3://BUCKET/PREFIX`` and Triton's ``s3://http://HOST:PORT/BUCKET/PREFIX``.

        The endpoint comes from the URI, else ``endpoint_url``, else the environment
        (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``), else AWS itself.

        Raises:
            StoreError: not an s3:// URI, or no bucket in it.
        """
        if not uri.startswith("s3://"):
            raise StoreError(f"{uri!r} is not an s3:// URI")
        rest = uri[len("s3://") :]
        if rest.startswith(("http://", "https://")):
            scheme, _, after = rest.partition("://")
            host, _, rest = after.partition("/")
            endpoint_url = f"{scheme}://{host}"
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"{uri!r} names no bucket; expected s3://BUCKET/PREFIX")
        if endpoint_url is None:
            endpoint_url = next(
                (os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None
            )
        return cls(bucket=bucket, prefix=prefix.strip("/"), endpoint_url=endpoint_url)

    def key(self, *parts: str) -> str:
        """``BUCKET/PREFIX/part/...`` as fsspec names it."""
        return "/".join(part.strip("/") for part in (self.bucket, self.prefix, *parts) if part)

    def uri(self, *parts: str) -> str:
        return "s3://" + self.key(*parts)

    def triton_uri(self, *parts: str) -> str:
        """The same place as Triton's ``--model-repository`` spells it."""
        if self.endpoint_url is None:
            return self.uri(*parts)
        return f"s3://{self.endpoint_url.rstrip('/')}/{self.key(*parts)}"

    def snapshot(self, snapshot_id: str) -> StoreLocation:
        """The location of one snapshot, itself usable as a repository root."""
        return StoreLocation(
            self.bucket, "/".join(p for p in (self.prefix, SNAPSHOTS_DIR, snapshot_id) if p),
            self.endpoint_url,
        )  # fmt: skip

    @property
    def snapshot_id(self) -> str | None:
        """The snapshot this location names, if it names one."""
        parts = self.prefix.split("/")
        if len(parts) >= 2 and parts[-2] == SNAPSHOTS_DIR:
            return parts[-1]
        return None

    @property
    def root(self) -> StoreLocation:
        """The root that holds ``snapshots/``, from a root or a snapshot location."""
        if self.snapshot_id is None:
            return self
        return StoreLocation(self.bucket, "/".join(self.prefix.split("/")[:-2]), self.endpoint_url)


def filesystem(location: StoreLocation) -> Any:
    """An s3fs filesystem for the location's endpoint; credentials from botocore's chain.

    Raises:
        StoreError: s3fs is not installed.
    """
    try:
        import s3fs
    except ImportError as exc:
        raise StoreError(
            "object storage needs s3fs: pip install 'tvision[s3]' (or the dev extra)"
        ) from exc
    client_kwargs = {"endpoint_url": location.endpoint_url} if location.endpoint_url else {}
    # A wrong endpoint should fail in seconds, not after botocore's long default retries.
    config_kwargs = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2}}
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs, config_kwargs=config_kwargs, skip_instance_cache=True
    )


@contextlib.contextmanager
def store_errors(location: StoreLocation, what: str) -> Iterator[None]:
    """Turn the storage stack's exceptions into a ``StoreError`` that names the problem."""
    where = f"{location.uri()}" + (
        f" at {location.endpoint_url}" if location.endpoint_url else " (AWS S3)"
    )
    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError as exc:
        raise StoreError(f"{what}: {where}: not found ({_reason(exc)})") from exc
    except PermissionError as exc:
        raise StoreError(
            f"{what}: {where}: access denied; check the credentials in AWS_ACCESS_KEY_ID / "
            f"AWS_SECRET_ACCESS_KEY or the AWS shared files ({_reason(exc)})"
        ) from exc
    except Exception as exc:  # botocore and aiohttp errors carry no common base class
        name = type(exc).__name__
        text = _reason(exc)
        if "Credentials" in name or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
            raise StoreError(
                f"{what}: {where}: the store refused or found no credentials; set "
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the AWS shared files ({name})"
            ) from exc
        if "Connect" in name or "Endpoint" in name or "connect" in text.lower():
            raise StoreError(
                f"{what}: cannot reach the object store {where}; check --endpoint-url "
                f"or AWS_ENDPOINT_URL ({name}: {text})"
            ) from exc
        raise StoreError(f"{what}: {where}: {name}: {text}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


# -- manifests --------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotFile:
    path: str  # relative to the repository root, with /
    sha256: str
    md5: str
    size_bytes: int


@dataclass
class SnapshotManifest:
    snapshot_id: str
    created: str
    models: dict[str, list[int]]
    files: list[SnapshotFile] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(file.size_bytes for file in self.files)

    def to_json(self) -> str:
        return json.dumps(
            {
                "snapshot": self.snapshot_id,
                "created": self.created,
                "models": self.models,
                "files": [vars(file) for file in self.files],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> SnapshotManifest:
        data = json.loads(text)
        return cls(
            snapshot_id=data["snapshot"],
            created=data["created"],
            models={name: list(versions) for name, versions in data["models"].items()},
            files=[SnapshotFile(**file) for file in data["files"]],
        )


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_manifest(repository: Path) -> SnapshotManifest:
    """The manifest a push of ``repository`` would write: every file, hashed.

    Raises:
        StoreError: the directory holds no models.
    """
    files = []
    models: dict[str, list[int]] = {}
    for path in sorted(repository.rglob("*")):
        relative = path.relative_to(repository)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        files.append(
            SnapshotFile(relative.as_posix(), sha256_of(path), _md5_of(path), path.stat().st_size)
        )
        if len(relative.parts) >= 2 and relative.parts[1].isdigit():
            versions = models.setdefault(relative.parts[0], [])
            if int(relative.parts[1]) not in versions:
                versions.append(int(relative.parts[1]))
    if not any((repository / model / contract.CONFIG_FILE).is_file() for model in models):
        raise StoreError(f"{repository} holds no model (no */config.pbtxt with versions)")
    listing = "".join(f"{file.path}\0{file.sha256}\n" for file in files)
    digest = hashlib.sha256(listing.encode()).hexdigest()[:DIGEST_CHARS]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return SnapshotManifest(digest, created, {m: sorted(v) for m, v in models.items()}, files)


# -- push ---------------------------------------------------------------------------------


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
        _require_bucket(fs, root)
        if fs.exists(snapshot.key(SNAPSHOT_MANIFEST)):
            return PushResult(snapshot, True, 0, 0, 0, len(manifest.files))
        present = _objects(fs, snapshot)
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


def _require_bucket(fs: Any, location: StoreLocation) -> None:
    """Raise FileNotFoundError for a missing bucket; let connection and credential errors
    through (``exists`` would turn them into a misleading False)."""
    try:
        fs.ls(location.bucket, refresh=True)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"bucket {location.bucket!r} does not exist") from exc


def _objects(fs: Any, location: StoreLocation) -> dict[str, dict[str, Any]]:
    """Every object under ``location``, by key, with its size and ETag."""
    try:
        found = fs.find(location.key(), detail=True)
    except FileNotFoundError:
        return {}
    return {key: info for key, info in found.items() if info.get("type") != "directory"}


def _same_object(info: dict[str, Any], file: SnapshotFile) -> bool:
    """An object uploaded whole: same size and, for a single-part upload, same MD5."""
    etag = str(info.get("ETag", "")).strip('"')
    return int(info.get("size", -1)) == file.size_bytes and etag == file.md5


def _known_objects(fs: Any, root: StoreLocation) -> dict[str, str]:
    """sha256 -> key of an object in a complete snapshot, for copies inside the store."""
    known: dict[str, str] = {}
    for snapshot_id in _snapshot_ids(fs, root):
        snapshot = root.snapshot(snapshot_id)
        manifest = _read_manifest(fs, snapshot)
        if manifest is not None:
            for file in manifest.files:
                known.setdefault(file.sha256, snapshot.key(file.path))
    return known


def _snapshot_ids(fs: Any, root: StoreLocation) -> list[str]:
    try:
        entries = fs.ls(root.key(SNAPSHOTS_DIR), detail=False)
    except FileNotFoundError:
        return []
    return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)


def _read_manifest(fs: Any, snapshot: StoreLocation) -> SnapshotManifest | None:
    try:
        return SnapshotManifest.from_json(fs.cat_file(snapshot.key(SNAPSHOT_MANIFEST)).decode())
    except FileNotFoundError:
        return None


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
        _require_bucket(fs, root)
        infos = [
            SnapshotInfo(root.snapshot(sid), _read_manifest(fs, root.snapshot(sid)))
            for sid in _snapshot_ids(fs, root)
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
    manifest = _read_manifest(fs, snapshot)
    if manifest is None:
        if not _objects(fs, snapshot):
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
