"""Small helpers shared by the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tvision(
    *args: str, timeout_s: float = 300, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run the ``tvision`` command in a fresh interpreter and capture its text output."""
    return subprocess.run(
        [sys.executable, "-m", "tvision.cli", *args],
        capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs,
    )  # fmt: skip


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
