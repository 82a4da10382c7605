"""The README's sections and command blocks, so that the suite runs what it shows."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(heading: str) -> str:
    """The text of the ``## heading`` section (its subsections included)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE
    )
    assert match, f"README has no section '## {heading}'"
    return match[1]


def blocks(heading: str, language: str, containing: str = "") -> list[str]:
    """The fenced ``language`` blocks of a section that contain ``containing``."""
    found = re.findall(rf"^```{language}\n(.*?)^```", section(heading), re.DOTALL | re.MULTILINE)
    return [block for block in found if containing in block]


def one_block(heading: str, language: str, containing: str = "") -> str:
    (block,) = blocks(heading, language, containing)
    return block
