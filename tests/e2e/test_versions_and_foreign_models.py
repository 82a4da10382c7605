"""Repository versions that survive failures, and ONNX files brought from other tools.

The foreign ONNX files are made here, in the conventions other exporters use (names like
``images``/``output0``, batch fixed at 1, softmax inside, pixels / 255; or NHWC, BGR,
dynamic sizes and logits), around the real pretrained network, so their predictions are
real and checkable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_tvision
from tvision.server import temporary_server
from tvision_client import Client
from tvision_export import configs, contract, repository
from tvision_export.onnx_import import OnnxImportError, import_onnx, inspect_onnx
from tvision_export.options import ServingOptions
from tvision_export.reference import reference_preprocess
from tvision_export.repository import ModelNames, write_version
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC, PreprocessSpec
from tvision_export.verify import verify_repository

pytestmark = pytest.mark.e2e

ESPRESSO = 967
COFFEE = sample_photo("coffee").path.read_bytes()
ULTRALYTICS_LIKE = PreprocessSpec(
    resize_short_px=256, crop_px=224, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=255.0
)
NHWC_BGR = PreprocessSpec(
    resize_short_px=256,
    crop_px=224,
    mean=(127.0, 127.0, 127.0),
    std=(128.0, 128.0, 128.0),
    channel_order="BGR",
    layout="NHWC",
)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- versions ----------------------------------------------------------------------------


# Renames 1-4 move the four version directories; 5 onwards replace model-level files
# (config, labels, warmup image), whose earlier copies must then be restored.
@pytest.mark.parametrize(
    ("fail_at", "failing_rename"),
    [("staging", None), ("moving versions", 3), ("moving model files", 6)],
)
def test_failed_export_leaves_the_previous_version_intact_and_serving(
    cpu_repository, default_source, tmp_path, monkeypatch, fail_at, failing_rename
) -> None:
    live = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, live)
    before = _snapshot(live)
    if fail_at == "staging":
        # Injected failure while the new version is being written.
        def broken_checksum(path: Path) -> str:
            raise OSError(f"injected failure while hashing {path.name}")

        monkeypatch.setattr(repository, "sha256_of", broken_checksum)
    else:
        real_replace = os.replace
        calls: list[Path] = []

        def flaky_replace(source, destination):
            calls.append(Path(destination))
            if len(calls) == failing_rename:
                raise OSError("injected failure during rename")
            return real_replace(source, destination)

        monkeypatch.setattr(repository.os, "replace", flaky_replace)
    # Every model-level config differs from the live one (the ensemble's too: its version
    # policy and image limits), so a missed restore shows in the snapshot.
    options = ServingOptions(max_queue_size=17, keep_versions=3, max_image_bytes=12_345_678)
    with pytest.raises(OSError, match="injected failure"):
        write_version(live, DEFAULT_SPEC.name, default_source, options)
    monkeypatch.undo()
    if fail_at == "moving model files":
        # The failure hit after a live config was replaced: the restore path really ran.
        assert calls[failing_rename - 2].name == contract.CONFIG_FILE
    assert _snapshot(live) == before
    assert not list(tmp_path.glob(".model_repository.staging-*"))
    assert verify_repository(live) == []
    with temporary_server(live) as server, Client(server.grpc_url) as client:
        assert client.model_info().versions == ["1"]
        assert client.classify(COFFEE).top.index == ESPRESSO


def test_new_versions_are_numbered_and_the_policy_keeps_the_latest(
    cpu_repository, default_source, tmp_path
):
    live = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, live)
    options = ServingOptions(keep_versions=2)
    for expected in (2, 3):
        written = write_version(live, DEFAULT_SPEC.name, default_source, options)
        assert written.version == expected
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    config = configs.parse((live / names.classifier / "config.pbtxt").read_text())
    assert config.version_policy.latest.num_versions == 2
    assert verify_repository(live) == []
    with temporary_server(live) as server, Client(server.grpc_url) as client:
        assert sorted(client.model_info().versions) == ["2", "3"]
        assert sorted(client.model_info(names.classifier).versions) == ["2", "3"]
        assert client.classify(COFFEE).top.index == ESPRESSO


def test_verify_reports_tampering_and_broken_wiring(cpu_repository, tmp_path) -> None:
    live = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, live)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    with (live / names.classifier / "1" / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    labels = live / names.classifier / "labels.txt"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-1]) + "\n")
    config_path = live / names.preprocess / "config.pbtxt"
    config_path.write_text(config_path.read_text().replace("dims: 224", "dims: 225", 1))
    kinds = {problem.kind for problem in verify_repository(live)}
    assert {"checksums", "labels", "wiring"} <= kinds
    completed = run_tvision("repo", "verify", str(live), timeout_s=120)
    assert completed.returncode == 1
    assert "[checksums]" in completed.stdout and "[wiring]" in completed.stdout


# -- foreign ONNX files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    network = DEFAULT_SPEC.build_model()

    class PixelsOver255Softmax(torch.nn.Module):
        """Takes pixels / 255 in NCHW, returns probabilities (softmax inside)."""

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.network((images * 255.0 - 127.0) / 128.0).softmax(dim=-1)

    class NhwcBgrLogits(torch.nn.Module):
        """Takes normalised BGR pixels in NHWC, returns logits."""

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.network(pixels.flip(-1).permute(0, 3, 1, 2))

    directory = tmp_path_factory.mktemp("foreign")
    paths = {"probs": directory / "yolo_cls_like.onnx", "logits": directory / "nhwc_bgr.onnx"}
    with torch.no_grad():
        torch.onnx.export(
            PixelsOver255Softmax().eval(),
            (torch.zeros(1, 3, 224, 224),),
            str(paths["probs"]),
            input_names=["images"],
            output_names=["output0"],
            opset_version=17,
            dynamo=False,
        )
        torch.onnx.export(
            NhwcBgrLogits().eval(),
            (torch.zeros(1, 224, 224, 3),),
            str(paths["logits"]),
            input_names=["pixels"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"pixels": {0: "batch", 1: "height", 2: "width"}, "logits": {0: "batch"}},
        )
    labels = directory / "labels.txt"
    labels.write_text("\n".join(DEFAULT_SPEC.load_labels()) + "\n")
    paths["labels"] = labels
    return paths


def test_inspect_reads_names_layout_and_sizes(foreign_models) -> None:
    probs = inspect_onnx(foreign_models["probs"])
    assert (probs.input_name, probs.output_name, probs.layout) == ("images", "output0", "NCHW")
    assert (probs.height, probs.width, probs.batch_fixed_at_one) == (224, 224, True)
    logits = inspect_onnx(foreign_models["logits"])
    assert (logits.input_name, logits.layout, logits.height) == ("pixels", "NHWC", None)
    assert not logits.batch_fixed_at_one and logits.num_classes == 1000


def test_import_rejects_labels_and_sizes_that_do_not_fit(foreign_models, tmp_path) -> None:
    short_labels = tmp_path / "short.txt"
    short_labels.write_text("a\nb\n")
    with pytest.raises(OnnxImportError, match="2 labels but the model outputs 1000"):
        import_onnx(
            foreign_models["probs"],
            short_labels,
            "x",
            ULTRALYTICS_LIKE,
            "probabilities",
            tmp_path / "r",
            ServingOptions(),
        )
    wrong_crop = PreprocessSpec(resize_short_px=300, crop_px=256, mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(OnnxImportError, match="fixed at 224 but the crop is 256"):
        import_onnx(
            foreign_models["probs"],
            foreign_models["labels"],
            "x",
            wrong_crop,
            "probabilities",
            tmp_path / "r",
            ServingOptions(),
        )
    with pytest.raises(OnnxImportError, match="do not sum to 1"):
        import_onnx(
            foreign_models["logits"],
            foreign_models["labels"],
            "x",
            NHWC_BGR,
            "probabilities",
            tmp_path / "r",
            ServingOptions(),
        )


@pytest.fixture(scope="module")
def multi_model_server(cpu_repository, foreign_models, tmp_path_factory):
    live = tmp_path_factory.mktemp("multi") / "model_repository"
    shutil.copytree(cpu_repository, live)
    # The logits file is the one whose repository copy gets a Softmax appended.
    before = {key: foreign_models[key].read_bytes() for key in ("probs", "logits")}
    import_onnx(
        foreign_models["probs"],
        foreign_models["labels"],
        "yolo_cls_like",
        ULTRALYTICS_LIKE,
        "probabilities",
        live,
        ServingOptions(),
    )
    # The same through the CLI, as a platform engineer would run it.
    completed = run_tvision(
        "export",
        "--repository",
        str(live),
        "--onnx",
        str(foreign_models["logits"]),
        "--labels",
        str(foreign_models["labels"]),
        "--name",
        "nhwc_bgr",
        "--outputs",
        "logits",
        "--crop-px",
        "224",
        "--resize-short-px",
        "256",
        "--mean",
        "127,127,127",
        "--std",
        "128,128,128",
        "--channel-order",
        "BGR",
        timeout_s=300,
    )
    assert completed.returncode == 0, completed.stderr
    # The users' files are untouched; the repository's copy of the logits file is not.
    assert {key: foreign_models[key].read_bytes() for key in before} == before
    served_copy = (
        live / ModelNames.for_model("nhwc_bgr").classifier / "1" / contract.MODEL_ONNX_FILE
    )
    assert served_copy.read_bytes() != before["logits"]
    with temporary_server(live) as server:
        yield live, server


def _reference_scores(onnx_path: Path, spec: PreprocessSpec, logits: bool) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pixels = reference_preprocess(COFFEE, spec)[np.newaxis]
    (scores,) = session.run(None, {session.get_inputs()[0].name: pixels})
    if logits:
        scores = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    return scores[0]


@pytest.mark.parametrize(
    ("model", "file_key", "spec", "logits"),
    [
        ("yolo_cls_like", "probs", ULTRALYTICS_LIKE, False),
        ("nhwc_bgr", "logits", NHWC_BGR, True),
    ],
)
def test_foreign_models_serve_beside_the_default(
    multi_model_server, foreign_models, model, file_key, spec, logits
) -> None:
    live, server = multi_model_server
    expected = _reference_scores(foreign_models[file_key], spec, logits)
    with Client(server.grpc_url) as client:
        served = client.classify(COFFEE, top_k=5, model=model)
        default = client.classify(COFFEE, top_k=5)
    assert served.top.index == ESPRESSO == default.top.index
    assert [p.index for p in served.predictions] == list(np.argsort(expected)[::-1][:5])
    for prediction in served.predictions:
        assert prediction.score == pytest.approx(float(expected[prediction.index]), abs=1e-3)
    assert verify_repository(live) == []


def test_cli_chooses_a_model_with_the_model_flag(multi_model_server) -> None:
    _live, server = multi_model_server
    completed = run_tvision(
        "classify",
        "--json",
        "--model",
        "nhwc_bgr",
        "--url",
        server.grpc_url,
        str(sample_photo("coffee").path),
        timeout_s=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert '"espresso"' in completed.stdout
