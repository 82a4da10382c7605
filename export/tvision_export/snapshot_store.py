"""Where snapshots live: an ``s3://`` location, its filesystem, and the errors it raises.

``StoreLocation`` names a root or one snapshot; ``filesystem`` is s3fs for its endpoint,
with credentials from botocore's chain; ``store_errors`` turns the storage stack's
exceptions into a ``StoreError`` that says what failed and why, never the credentials.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

SNAPSHOTS_DIR = "snapshots"
# Standard variables botocore reads for a custom endpoint, most specific first.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

# (what is happening, bytes done, bytes in all, files done, files in all)
Progress = Callable[[str, int, int, int, int], None]


class StoreError(Exception):
    """The object store could not do what was asked; the message says what and why."""


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


def require_bucket(fs: Any, location: StoreLocation) -> None:
    """Raise FileNotFoundError for a missing bucket; let connection and credential errors
    through (``exists`` would turn them into a misleading False)."""
    try:
        fs.ls(location.bucket, refresh=True)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"bucket {location.bucket!r} does not exist") from exc


def objects_under(fs: Any, location: StoreLocation) -> dict[str, dict[str, Any]]:
    """Every object under ``location``, by key, with its size and ETag."""
    try:
        found = fs.find(location.key(), detail=True)
    except FileNotFoundError:
        return {}
    return {key: info for key, info in found.items() if info.get("type") != "directory"}


def snapshot_ids(fs: Any, root: StoreLocation) -> list[str]:
    """The ids of the snapshots under ``root``, complete or not, sorted."""
    try:
        entries = fs.ls(root.key(SNAPSHOTS_DIR), detail=False)
    except FileNotFoundError:
        return []
    return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)
