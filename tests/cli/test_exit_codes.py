"""One exit-code table for every command (``tvision.exit_codes``, README "Exit codes").

Each command runs in a fresh interpreter with an input a user could get wrong, and must
exit with the table's code and say what is wrong in one line, never with a traceback.
None of these cases starts a server; the last two tests use the session's real one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_tvision
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_COULD_NOT_RUN, EXIT_OK, MEANINGS
from tvision.server import TritonServer
from tvision_export.samples import sample_photo


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# (command with placeholders, expected code, words its error must contain)
CASES = [
    (["export", "--fp16"], EXIT_COULD_NOT_RUN, "needs the gpu target"),
    (["export", "--quality-reference", "{missing}"], EXIT_COULD_NOT_RUN,
     "cannot read quality reference"),
    (["export", "--spec", "no_such_module:SPEC"], EXIT_COULD_NOT_RUN, "no_such_module"),
    (["export", "--onnx", "{missing}", "--labels", "{missing}", "--name", "x"],
     EXIT_COULD_NOT_RUN, "not a readable ONNX file"),
    (["serve", "--repository", "{missing}"], EXIT_COULD_NOT_RUN, "does not exist"),
    (["serve", "--grpc-tls-key", "{missing}"], EXIT_COULD_NOT_RUN, "go together"),
    (["classify", "{photo}", "--url", "127.0.0.1:{closed}", "--timeout-s", "2"],
     EXIT_COULD_NOT_RUN, "Connection refused"),
    (["classify", "{photo}", "--top-k", "0"], EXIT_COULD_NOT_RUN, "positive integer"),
    (["demo", "--repository", "{missing}"], EXIT_COULD_NOT_RUN, "does not exist"),
    (["repo", "verify", "{missing}"], EXIT_COULD_NOT_RUN, "no such repository directory"),
    (["repo", "verify", "{empty}"], EXIT_CHECK_FAILED, "no models in the repository"),
    (["repo", "verify", "s3://models/prod/snapshots/0", "--endpoint-url", "{store}"],
     EXIT_COULD_NOT_RUN, "cannot reach the object store"),
    (["repo", "push", "{missing}", "s3://models/prod", "--endpoint-url", "{store}"],
     EXIT_COULD_NOT_RUN, "fails verify"),
    (["repo", "list", "s3://models/prod", "--endpoint-url", "{store}"],
     EXIT_COULD_NOT_RUN, "cannot reach the object store"),
    (["repo", "gc", "s3://models/prod", "--keep", "1", "--endpoint-url", "{store}"],
     EXIT_COULD_NOT_RUN, "cannot reach the object store"),
    (["validate", "--images", "{missing}"], EXIT_COULD_NOT_RUN, "does not exist"),
    (["validate", "--spec", "no_such_module:SPEC"], EXIT_COULD_NOT_RUN, "no_such_module"),
    (["fidelity", "--repository", "{missing}"], EXIT_COULD_NOT_RUN, "no exported"),
    (["bench", "--paths", "no-such-path"], EXIT_COULD_NOT_RUN, "unknown paths"),
    (["bench", "--set", "no_such_option=1"], EXIT_COULD_NOT_RUN, "KEY=VALUE"),
    (["bench-preprocess", "--repeats", "0"], EXIT_COULD_NOT_RUN, "positive integer"),
    (["bench-sdk", "--rounds", "0"], EXIT_COULD_NOT_RUN, "positive integer"),
    (["plan", "--rate", "0"], EXIT_COULD_NOT_RUN, "--rate must be positive"),
    (["plan", "--rate", "100", "--gpu-img-s", "0"], EXIT_COULD_NOT_RUN,
     "--gpu-img-s must be positive"),
    (["plan", "--rate", "100", "--repeats", "1", "--json", "{missing}/plan.json"],
     EXIT_COULD_NOT_RUN, "cannot write the report"),
    (["no-such-command"], EXIT_COULD_NOT_RUN, "invalid choice"),
]  # fmt: skip


def _case_id(case: object) -> str:
    values = getattr(case, "values", case)
    assert isinstance(values, tuple)
    return " ".join(word for word in values[0] if not word.startswith("{"))


@pytest.mark.parametrize(("command", "code", "words"), CASES, ids=map(_case_id, CASES))
def test_every_command_exits_by_the_table_without_a_traceback(
    command: list[str], code: int, words: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    values = {
        "missing": str(tmp_path / "missing"),
        "empty": str(tmp_path / "empty"),
        "photo": str(sample_photo("coffee").path),
        "closed": str(_closed_port()),
        "store": f"http://127.0.0.1:{_closed_port()}",
    }
    args = [word.format(**values) for word in command]
    # Credentials are set (as a deployment sets them), so only the endpoint is wrong.
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    completed = run_tvision(*args, timeout_s=120, cwd=ROOT, env=environment)
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.returncode == code, completed.stdout[-1000:] + completed.stderr[-2000:]
    assert words in completed.stdout + completed.stderr, completed.stderr[-2000:]


def test_gpu_check_without_a_gpu_could_not_run() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the no-GPU refusal cannot be produced here")
    completed = run_tvision("gpu-check", timeout_s=120)
    assert completed.returncode == EXIT_COULD_NOT_RUN
    assert "GPU CHECK FAILED: no GPU here" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_fidelity_on_a_corrupt_onnx_file_says_so_without_a_traceback(tmp_path: Path) -> None:
    """A repository whose newest classifier file is not an ONNX model (a truncated copy)."""
    version = tmp_path / "repository" / "efficientnet_lite0_classifier" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"\x08\x07not an onnx model")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sample_photo("coffee").path, photos)
    completed = run_tvision(
        "fidelity", "--repository", str(tmp_path / "repository"), "--photos", str(photos),
        timeout_s=120,
    )  # fmt: skip
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.returncode == EXIT_COULD_NOT_RUN
    assert "ONNX Runtime cannot load it" in completed.stderr


def test_the_readme_lists_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d) \| `(EXIT_\w+)` \|", section, flags=re.MULTILINE))
    import tvision.exit_codes as table

    assert {int(code) for code in rows} == set(MEANINGS)
    assert all(getattr(table, name) == int(code) for code, name in rows.items())


@pytest.mark.e2e
def test_classify_exits_1_when_an_image_fails_and_prints_the_others(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a picture")
    photo = str(sample_photo("coffee").path)
    completed = run_tvision(
        "classify", "--json", "--url", triton_server.grpc_url, photo, str(not_an_image),
        timeout_s=120,
    )  # fmt: skip
    assert completed.returncode == EXIT_CHECK_FAILED, completed.stderr[-2000:]
    good, bad = json.loads(completed.stdout)
    assert good["predictions"][0]["label"] == "espresso" and "error" not in good
    assert bad["image"] == str(not_an_image) and bad["error"]
    ok = run_tvision("classify", "--url", triton_server.grpc_url, photo, timeout_s=120)
    assert ok.returncode == EXIT_OK and "espresso" in ok.stdout
