"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvision.server import ServerPorts, TritonServer

ROOT = Path(__file__).resolve().parents[1]


def run_tvision(
    *args: str, timeout_s: float = 300, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run the ``tvision`` command in a fresh interpreter and capture its text output."""
    return subprocess.run(
        [sys.executable, "-m", "tvision.cli", *args],
        capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs,
    )  # fmt: skip


@contextlib.contextmanager
def serving(
    repository: Path | str, ports: ServerPorts | None = None, **options: Any
) -> Iterator[TritonServer]:
    """A real server for one test (free ports unless given), killed when the test is done.

    A graceful stop costs about 4 s, the python backend's unload (it sleeps 1 s for each
    model instance), and is not what these tests check: the tests of a graceful stop call
    ``stop()`` themselves. A kill gets the same cleanup (test_faults.py checks both)."""
    from tvision.server import ServerPorts, TritonServer

    server = TritonServer(repository, ports or ServerPorts.free(), **options).start()
    try:
        yield server
    finally:
        server.stop(graceful=False)


# One request per restricted HTTP API (tvision.server.ADMIN_APIS): (method, path).
ADMIN_HTTP_ENDPOINTS = {
    "model-repository": ("POST", "/v2/repository/index"),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status"),
    "statistics": ("GET", "/v2/models/stats"),
    "trace": ("GET", "/v2/trace/setting"),
    "logging": ("GET", "/v2/logging"),
}


def http_status(
    base_url: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> int:
    """The HTTP status of one request (an error status is returned, not raised)."""
    import urllib.error
    import urllib.request

    data = body if body is not None else (b"{}" if method == "POST" else None)
    request = urllib.request.Request(
        f"{base_url}{path}", data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
