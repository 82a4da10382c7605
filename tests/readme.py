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


def text() -> str:
    return README.read_text(encoding="utf-8")


def shell_blocks() -> list[str]:
    """Every fenced ``sh`` block in the README, in order."""
    return re.findall(r"^```sh\n(.*?)^```", text(), re.DOTALL | re.MULTILINE)


def commands(block: str) -> list[list[str]]:
    """The simple commands of a shell block as argument lists: continued lines joined (a
    trailing backslash or pipe), comments dropped, split at ``|``, ``&&``, ``;`` and
    braces, leading ``NAME=value`` assignments left out."""
    import shlex

    found: list[list[str]] = []
    for line in re.sub(r"(\\|\|)[ \t]*\n", r" \1 ", block).replace("\\ ", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|(){}")
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in {"|", "||", "&&", ";", "(", ")", "{", "}"}:
                found.append(current)
                current = []
            elif current or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
                current.append(token)  # (an assignment before a command is not its name)
    return [command for command in found if command]


INLINE_COMMAND = re.compile(r"`((?:\.venv/bin/)?tvision(?:-loadtest)? [^`]*)`")


def inline_commands() -> list[str]:
    """Commands quoted inline in the prose, such as `tvision serve --health-port P`."""
    return INLINE_COMMAND.findall(text())
