"""What the commands print: unwrapped lines off a terminal, a progress bar only once a
transfer starts, whole image names in ``validate``'s table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_tvision
from tvision.cli._common import stderr_console
from tvision.cli.repo import transfer_progress
from tvision.validate import ImageComparison, ValidationOutcome, render


def test_the_console_does_not_wrap_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    line = "step " + "x" * 150  # rich's width off a terminal is 80
    stderr_console().print(line)
    assert capsys.readouterr().err == line + "\n"


def test_every_rich_console_is_the_shared_one() -> None:
    made_elsewhere = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tvision").rglob("*.py")
        if "Console(" in path.read_text() and path.name != "_common.py"
    ]
    assert not made_elsewhere, f"use tvision.cli._common.stderr_console: {made_elsewhere}"


def test_no_progress_bar_before_the_first_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OSError), transfer_progress("uploading"):
        raise OSError("bucket 'x' does not exist")
    assert capsys.readouterr().err == ""
    with transfer_progress("uploading") as progress:
        progress("a.onnx", 5, 10, 1, 2)
    assert "uploading" in capsys.readouterr().err


def test_an_error_before_any_transfer_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    closed = "http://127.0.0.1:9"  # discard: nothing listens
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    for command in (
        ["repo", "push", str(tmp_path / "empty"), "s3://models/prod"],
        ["repo", "verify", "s3://models/prod/snapshots/0"],
    ):
        completed = run_tvision(
            *command, "--endpoint-url", closed, timeout_s=120, cwd=ROOT, env=environment
        )
        assert completed.returncode == 2
        assert completed.stdout == "", completed.stdout  # no empty bar drawn, anywhere
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr


def test_validate_shows_whole_image_names() -> None:
    long_name = "/data/photos/" + "a-very-long-directory-name/" * 3 + "coffee.jpg"
    outcome = ValidationOutcome(
        comparisons=[
            ImageComparison(long_name, 967, 967, 0.001),
            ImageComparison("short.jpg", 1, 2, 0.2),
        ]
    )
    table = render(outcome, 0.9, 0.05)
    assert long_name in table and "…" not in table
    header, first, second = table.splitlines()[:3]
    assert first.split() == [long_name, "967", "967", "0.0010"]
    assert second.split()[:4] == ["short.jpg", "1", "2", "0.2000"]
    served_ends = header.index("served") + len("served")
    assert first[:served_ends].endswith("967") and second[:served_ends].endswith("1")
