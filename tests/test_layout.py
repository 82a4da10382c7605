"""Every room small enough to read: no source file over 400 lines, no function over 60.

The bounds are the second redesign step's (issue "every room one job"); a module that
outgrows them is a module with a second job waiting to be named.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("tvision", "export/tvision_export", "client/src", "loadtest/src")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _source_files() -> list[Path]:
    files = [path for top in SOURCES for path in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 40, f"expected the project's modules under {SOURCES}, found {files}"
    return files


def test_no_source_file_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in _source_files()
        if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"over {MAX_FILE_LINES} lines: {long}"


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}::{node.name}"] = lines
    assert not long, f"over {MAX_FUNCTION_LINES} lines: {long}"
