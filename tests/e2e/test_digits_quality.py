"""A model whose accuracy is known and not trivial, through the whole quality path.

A small classifier is trained here on scikit-learn's handwritten digits, brought with
``tvision export --onnx``, served, and measured by ``tvision evaluate`` on digits it was
not trained on; then a deliberately worse version of it (trained on a few dozen digits),
which the accuracy gate refuses against the first one's baseline.

The digits are 8x8 grey images, written as 32x32 PNGs: lossless, and the model's own input
size, so what the server does to them is the scale and the normalisation of the export's
flags. The expected accuracy is the test's own: the trained model run in-process on the
same files, decoded by Pillow.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_tvision
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_OK
from tvision.server import TritonServer, temporary_server

pytestmark = pytest.mark.e2e

torch = pytest.importorskip("torch")

SIZE = 32
TRAIN, HELD_OUT = 1000, 400
NAME = "digits"
# The import's preprocessing: pixels / 255, then (x - 0.5) / 0.5 per channel.
IMPORT_FLAGS = (
    "--resize-short-px", str(SIZE), "--crop-px", str(SIZE), "--scale", "255",
    "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--name", NAME,
)  # fmt: skip


def _digits() -> tuple[list[bytes], np.ndarray]:
    """Every digit as a PNG, in a fixed shuffled order, and its class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    pngs = []
    for grey in digits.images[order]:
        image = Image.fromarray((grey * (255 / 16)).round().astype(np.uint8))
        buffer = io.BytesIO()
        image.resize((SIZE, SIZE), Image.Resampling.NEAREST).convert("RGB").save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs, digits.target[order]


def _tensors(pngs: list[bytes]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32) for png in pngs]
    return torch.from_numpy((np.stack(arrays).transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5)


def _trained(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(3 * SIZE * SIZE, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for start in range(0, len(x), 50):
            loss = torch.nn.functional.cross_entropy(
                model(x[start : start + 50]), y[start : start + 50]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _onnx(model: torch.nn.Module, path: Path) -> Path:
    torch.onnx.export(
        model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=["input"],
        output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )  # fmt: skip
    return path


def _export(onnx: Path, labels: Path, repository: Path) -> None:
    done = run_tvision(
        "export", "--onnx", str(onnx), "--labels", str(labels), *IMPORT_FLAGS,
        "--repository", str(repository),
    )  # fmt: skip
    assert done.returncode == EXIT_OK, done.stdout + done.stderr


def _evaluate(server: TritonServer, held_out: Path, labels: Path, *gate: str):
    report = held_out.parent / "report.json"
    done = run_tvision(
        "evaluate", "--images", str(held_out), "--url", server.grpc_url, "--labels",
        str(labels), "--model", NAME, "--json", str(report), *gate,
    )  # fmt: skip
    return done, json.loads(report.read_text()) if report.exists() else None


def _predictions_per_class(server: TritonServer) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    counts = {}
    for line in lines:
        if line.startswith("tvision_predictions_total{") and f'model="{NAME}"' in line:
            counts[line.split('class="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return counts


def test_a_trained_digit_classifier_is_measured_and_a_worse_version_is_refused(
    tmp_path,
) -> None:
    pngs, classes = _digits()
    x, y = _tensors(pngs), torch.from_numpy(classes).long()
    good = _trained(x[:TRAIN], y[:TRAIN], epochs=10)
    worse = _trained(x[:40], y[:40], epochs=3)
    held_x, held_y = x[TRAIN : TRAIN + HELD_OUT], y[TRAIN : TRAIN + HELD_OUT]
    good_top1, worse_top1 = _accuracy(good, held_x, held_y), _accuracy(worse, held_x, held_y)
    # Not trivial, and a clear step down: preconditions on the test's own models.
    assert 0.85 < good_top1 < 1.0 and worse_top1 < good_top1 - 0.1, (good_top1, worse_top1)

    held_out = tmp_path / "held-out"
    for index, (png, digit) in enumerate(
        zip(pngs[TRAIN : TRAIN + HELD_OUT], classes[TRAIN : TRAIN + HELD_OUT], strict=True)
    ):
        (held_out / str(digit)).mkdir(parents=True, exist_ok=True)
        (held_out / str(digit) / f"{index}.png").write_bytes(png)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{digit}\n" for digit in range(10)))
    repository = tmp_path / "model_repository"
    _export(_onnx(good, tmp_path / "good.onnx"), labels, repository)
    baseline = tmp_path / "baseline.json"

    with temporary_server(repository) as server:
        done, report = _evaluate(
            server, held_out, labels, "--min-top1", "0.85", "--save-baseline", str(baseline)
        )
        served = _predictions_per_class(server)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    print(f"digits: top-1 {report['top1']:.3f} served, {good_top1:.3f} in-process (good); ", end="")
    # PNG is lossless and nothing is resized: the served model is the trained one.
    assert report["images"] == HELD_OUT
    assert report["top1"] == pytest.approx(good_top1, abs=1 / HELD_OUT)
    assert sum(row["support"] for row in report["per_class"]) == HELD_OUT
    # Ten labels: every class has its own prediction counter, and they count the answers.
    answered: dict[str, float] = {str(digit): 0.0 for digit in range(10)}
    for prediction in report["predictions"]:
        answered[prediction["served_top5"][0]] += 1
    assert served == {**answered, "other": 0.0}

    _export(_onnx(worse, tmp_path / "worse.onnx"), labels, repository)  # version 2
    with temporary_server(repository) as server:
        done, report = _evaluate(
            server, held_out, labels, "--baseline", str(baseline), "--max-top1-drop-points", "2"
        )
    print(f"worse version {report['top1']:.3f} served, {worse_top1:.3f} in-process")
    assert done.returncode == EXIT_CHECK_FAILED, done.stdout + done.stderr
    assert "accuracy gate FAILED: top-1 vs baseline" in done.stdout
    assert report["top1"] == pytest.approx(worse_top1, abs=1 / HELD_OUT)
