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
