"""The README's HTTP/REST examples (tritonclient and curl), run as written against a real
server through its edge: only the address and the photo are this run's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme import one_block
from tvision_export.samples import sample_photo

pytestmark = pytest.mark.e2e

SECTION = "SDK quick start"
README_ADDRESS = "localhost:8000"
# score:index:label, as Triton's classification extension writes each of the top classes.
TOP_CLASS = re.compile(r"(\d\.\d+):(\d+):([^'\"\]]+)")
CAT_CLASSES = range(281, 286)  # ImageNet's domestic cats: tabby ... Egyptian Mau


def _in_a_directory_with_cat_jpg(tmp_path: Path) -> Path:
    shutil.copy(sample_photo("chelsea").path, tmp_path / "cat.jpg")
    return tmp_path


def _address(triton_server) -> str:
    return triton_server.http_url.removeprefix("http://")


def test_the_tritonclient_http_example_prints_the_top_classes(triton_server, tmp_path) -> None:
    code = one_block(SECTION, "python", containing="tritonclient.http")
    assert README_ADDRESS in code
    done = subprocess.run(
        [sys.executable, "-c", code.replace(README_ADDRESS, _address(triton_server))],
        cwd=_in_a_directory_with_cat_jpg(tmp_path), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    top = TOP_CLASS.findall(done.stdout)
    assert len(top) == 3, done.stdout
    assert int(top[0][1]) in CAT_CLASSES, top
    scores = [float(score) for score, _, _ in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_the_curl_example_sends_the_image_as_binary_data(triton_server, tmp_path) -> None:
    script = one_block(SECTION, "sh", containing="curl")
    assert README_ADDRESS in script
    bin_dir = str(Path(sys.executable).parent)  # python3 as the README's shell finds it
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(README_ADDRESS, _address(triton_server))],
        cwd=_in_a_directory_with_cat_jpg(tmp_path), capture_output=True, text=True,
        timeout=60, check=False, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (output,) = json.loads(done.stdout)["outputs"]
    assert output["name"] == "PROBABILITIES" and output["shape"] == [1, 3]
    top = [TOP_CLASS.fullmatch(item).groups() for item in output["data"]]
    assert int(top[0][1]) in CAT_CLASSES, top
