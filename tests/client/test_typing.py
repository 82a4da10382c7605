"""The SDK type-checks under ``mypy --strict`` and ships ``py.typed``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tvision_client

SDK_DIR = Path(tvision_client.__file__).resolve().parent


def test_sdk_ships_py_typed() -> None:
    assert (SDK_DIR / "py.typed").is_file()


def test_sdk_is_mypy_strict_clean() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(SDK_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
