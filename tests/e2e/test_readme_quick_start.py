"""The README's SDK quick start and its ``tvision classify`` line, run as written against
a real server: only the address is this run's, and the files they name are real photos."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.readme import one_block
from tvision_export.samples import sample_photo

pytestmark = pytest.mark.e2e

SECTION = "SDK quick start"
README_ADDRESS = "localhost:8001"
CAT_CLASSES = range(281, 286)  # ImageNet's domestic cats: tabby ... Egyptian Mau
ESPRESSO = 967


def _photo(name: str, path: Path) -> Path:
    """A sample photo saved in the format ``path``'s suffix names."""
    Image.open(sample_photo(name).path).convert("RGB").save(path)
    return path


def test_the_sdk_quick_start_runs_as_written(triton_server, cpu_repository, tmp_path) -> None:
    code = one_block(SECTION, "python", containing="from tvision_client import Client")
    assert f'Client("{README_ADDRESS}")' in code
    _photo("chelsea", tmp_path / "cat.jpg")
    _photo("coffee", tmp_path / "a.jpg")
    _photo("chelsea", tmp_path / "b.png")
    done = subprocess.run(
        [sys.executable, "-c", code.replace(README_ADDRESS, triton_server.grpc_url)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    top, first, second = done.stdout.splitlines()
    labels = (cpu_repository / "efficientnet_lite0" / "labels.txt").read_text().splitlines()
    label, score = top.rsplit(" ", 1)
    assert label in [labels[index] for index in CAT_CLASSES] and 0 < float(score) <= 1, top
    # classify_batch's items: a Prediction each (its repr), not a ClientError.
    indexes = [re.search(r"Prediction\(.*index=(\d+)", line) for line in (first, second)]
    assert all(indexes), done.stdout
    assert int(indexes[0][1]) == ESPRESSO and int(indexes[1][1]) in CAT_CLASSES


def test_the_classify_command_runs_as_written(triton_server, tmp_path) -> None:
    (block,) = [line for line in one_block(SECTION, "sh", "tvision classify").splitlines() if line]
    argv = shlex.split(block.replace(README_ADDRESS, triton_server.grpc_url))
    assert argv[:2] == ["tvision", "classify"] and "--json" in argv
    _photo("coffee", tmp_path / "photo.jpg")
    _photo("chelsea", tmp_path / "other.png")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tvision"), *argv[1:]],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    photo, other = json.loads(done.stdout)
    assert [photo["image"], other["image"]] == ["photo.jpg", "other.png"]
    assert len(photo["predictions"]) == len(other["predictions"]) == 3  # --top-k 3
    assert photo["predictions"][0]["index"] == ESPRESSO
    assert other["predictions"][0]["index"] in CAT_CLASSES
