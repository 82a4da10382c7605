"""Bringing a model: the README's way of making the ONNX file works in this venv, and
``tvision export --onnx`` says the preprocessing it derived."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_tvision
from tests.readme import section

torch = pytest.importorskip("torch")

BRING_YOUR_OWN = "For platform engineers: export, verify, serve, roll out"


def _tiny_classifier() -> torch.nn.Module:
    """Three classes from any size of RGB image: small enough to export in a second."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )


def test_the_readme_says_why_and_how_to_export_without_dynamo() -> None:
    text = " ".join(section(BRING_YOUR_OWN).split())
    minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert "dynamo=False" in text and f"torch ({minor})" in text, "name the venv's torch"
    # What it says is still so: the default exporter needs onnxscript, which is absent.
    assert importlib.util.find_spec("onnxscript") is None, "the README's reason is stale"


def test_the_readme_export_snippet_makes_a_file_tvision_reads(tmp_path, monkeypatch) -> None:
    from tvision_export.onnx_import import inspect_onnx

    # The block is indented under its bullet.
    fenced = re.findall(r"^( *)```python\n(.*?)^\1```", section(BRING_YOUR_OWN), re.S | re.M)
    (snippet,) = [textwrap.dedent(code) for _, code in fenced if "torch.onnx.export" in code]
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {"model": _tiny_classifier()})
    info = inspect_onnx(tmp_path / "my_model.onnx")
    assert (info.input_name, info.layout, info.height, info.num_classes) == (
        "input",
        "NCHW",
        224,
        3,
    )
    assert not info.batch_fixed_at_one


def test_export_onnx_prints_the_preprocessing_it_derived(tmp_path: Path) -> None:
    model_file, labels = tmp_path / "tiny96.onnx", tmp_path / "labels.txt"
    torch.onnx.export(
        _tiny_classifier().eval(), (torch.zeros(1, 3, 96, 96),), str(model_file),
        input_names=["images"], output_names=["logits"], dynamo=False,
    )  # fmt: skip
    labels.write_text("a\nb\nc\n")
    completed = run_tvision(
        "export", "--onnx", str(model_file), "--labels", str(labels), "--name", "tiny",
        "--scale", "255", "--repository", str(tmp_path / "repository"), timeout_s=300, cwd=ROOT,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (
        "preprocessing: resize_short_px 110, crop_px 96, scale 255, mean 0,0,0, std 1,1,1, "
        "channel_order RGB, layout NCHW"
    ) in completed.stdout
