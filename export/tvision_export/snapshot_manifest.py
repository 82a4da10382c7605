"""A snapshot's manifest: every file's path, sha256, MD5 and size, and the content digest
that names the snapshot. Written last by a push, so its presence marks a complete snapshot.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvision_export import contract
from tvision_export.repository import sha256_of
from tvision_export.snapshot_store import StoreError, StoreLocation

SNAPSHOT_MANIFEST = "tvision-snapshot.json"
DIGEST_CHARS = 16


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


def read_manifest(fs: Any, snapshot: StoreLocation) -> SnapshotManifest | None:
    """The snapshot's manifest, or None when it has none (an incomplete snapshot)."""
    try:
        return SnapshotManifest.from_json(fs.cat_file(snapshot.key(SNAPSHOT_MANIFEST)).decode())
    except FileNotFoundError:
        return None
