"""The gpu target's DALI path (``--preprocess dali``), checked without a GPU: the repository
it writes, its rendered ``dali.py``, and its CPU twin (the same pipeline definition built
with CPU operators) against the model's reference preprocessing on real photos.

These tests need DALI (``tvision[dali]``), which ``make test`` installs. Without it they
are skipped, each saying so, except under CI, where a missing DALI fails them.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from tvision.dali_twin import DaliTwin, dali_available, load_definition
from tvision.fidelity import _classifier
from tvision.validate import DEFAULT_MAX_PROBABILITY_DIFF, check_repository_spec
from tvision_export import configs, contract, dali_model
from tvision_export.options import ServingOptions
from tvision_export.reference import reference_preprocess
from tvision_export.repository import ModelNames, write_version
from tvision_export.samples import phone_jpeg, sample_photo
from tvision_export.spec import DEFAULT_SPEC

NAMES = ModelNames.for_model(DEFAULT_SPEC.name)
SPEC = json.loads(DEFAULT_SPEC.preprocess.to_json())


@pytest.fixture(scope="module", autouse=True)
def _dali() -> None:
    if not dali_available():
        if os.environ.get("CI"):
            pytest.fail("DALI is not installed; `make test` installs tvision[dali]")
        pytest.skip("DALI is not installed (pip install 'tvision[dali]'): DALI path untested")


@pytest.fixture(scope="module")
def dali_repository(default_source, tmp_path_factory):
    repository = tmp_path_factory.mktemp("dali") / "model_repository"
    write_version(
        repository,
        DEFAULT_SPEC.name,
        default_source,
        ServingOptions(target="gpu", preprocess="dali"),
    )
    return repository


@pytest.fixture(scope="module")
def twin(dali_repository) -> DaliTwin:
    return DaliTwin.from_repository(dali_repository, DEFAULT_SPEC.name)


def _jpeg(image: Image.Image, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").resize(size, Image.LANCZOS).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _photos() -> dict[str, bytes]:
    """Real photos at the sizes clients send, and a 12 MP phone photo stored sideways."""
    chelsea = Image.open(sample_photo("chelsea").path)
    coffee = Image.open(sample_photo("coffee").path)
    astronaut = Image.open(sample_photo("astronaut").path)
    upright_phone = coffee.convert("RGB").resize((3024, 4032), Image.LANCZOS)
    return {
        "512": _jpeg(astronaut, (512, 512)),
        "1024": _jpeg(chelsea, (1540, 1024)),
        "1920x1080": _jpeg(coffee, (1920, 1080)),
        "phone 4032x3024, EXIF 6": phone_jpeg(upright_phone, 90),
        "png": _png(chelsea),
    }


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def test_the_rendered_dali_py_imports_only_dali_and_holds_the_spec(dali_repository) -> None:
    text = (dali_repository / NAMES.preprocess / "1" / contract.DALI_PY_FILE).read_text()
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported and all(name.split(".")[:2] == ["nvidia", "dali"] for name in imported)
    module = load_definition(text)
    # The spec's numbers, on 0-255 pixels: (p / scale - mean) / std.
    scale = SPEC["scale"]
    assert tuple(m * scale for m in SPEC["mean"]) == module.MEAN
    assert tuple(s * scale for s in SPEC["std"]) == module.STD
    assert SPEC["crop_px"] == module.CROP_PX
    assert (module.ENCODED, module.UPRIGHT_HW, module.RESIZED_HW, module.CROP_POSITION) == (
        contract.DALI_ENCODED, contract.DALI_UPRIGHT, contract.DALI_SIZE,
        contract.DALI_CROP_POSITION,
    )  # fmt: skip
    # Exactly one pipeline, marked for the DALI backend's autoserialization.
    marked = [v for v in vars(module).values() if getattr(v, "_is_autoserialize", False)]
    assert marked == [module.pipeline]


def test_the_dali_repository_parses_with_the_dali_model_in_the_ensemble(dali_repository) -> None:
    parsed = {
        path.parent.name: configs.parse(path.read_text())
        for path in dali_repository.glob("*/config.pbtxt")
    }
    ensemble, intake = parsed[NAMES.ensemble], parsed[NAMES.intake]
    dali, classifier = parsed[NAMES.preprocess], parsed[NAMES.classifier]
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [
        NAMES.intake, NAMES.preprocess, NAMES.classifier,
    ]  # fmt: skip
    intake_step, dali_step, _ = ensemble.ensemble_scheduling.step
    assert dict(intake_step.output_map) == dict(dali_step.input_map)
    assert dali.backend == "dali" and classifier.platform == "onnxruntime_onnx"
    assert [group.kind for group in dali.instance_group] == [
        configs.model_config_pb2.ModelInstanceGroup.KIND_GPU
    ]
    assert dali.dynamic_batching.preferred_batch_size == [16, 32, 64]
    # What the intake sends is what the DALI model takes, name, type and shape.
    sent = {o.name: (o.data_type, list(o.dims)) for o in intake.output}
    taken = {i.name: (i.data_type, list(i.dims)) for i in dali.input}
    assert sent == taken and len(sent) == 4
    assert [i.allow_ragged_batch for i in dali.input if i.name == contract.DALI_ENCODED] == [True]
    # The DALI backend's own keys are ones it documents; the rest are tvision's.
    backend_keys = set(dali.parameters) - {
        contract.PARAM_PREPROCESS_SPEC, contract.PARAM_MAX_IMAGE_PIXELS,
        contract.PARAM_MAX_IMAGE_BYTES, contract.PARAM_MAX_REQUEST_PIXELS,
    }  # fmt: skip
    assert backend_keys == {"num_threads"} <= dali_model.DALI_PARAMETER_KEYS
    # `tvision validate` finds the deployed spec on the DALI model too.
    assert check_repository_spec(dali_repository, DEFAULT_SPEC.name, DEFAULT_SPEC.preprocess) == []


def test_the_twin_matches_the_reference_on_real_photos(twin, default_source) -> None:
    classify = _classifier(default_source.onnx_path)
    photos = _photos()
    outputs = twin.preprocess([[data] for data in photos.values()])
    multiplier = 1.0 / (SPEC["scale"] * min(SPEC["std"]))
    for (name, data), pixels in zip(photos.items(), outputs, strict=True):
        assert not isinstance(pixels, str), f"{name}: {pixels}"
        reference = reference_preprocess(data, DEFAULT_SPEC.preprocess)
        assert pixels.shape == (1, *reference.shape), name
        # Pixels within one 8-bit level of the reference's everywhere, and all but a few
        # exactly the reference's: Pillow's two rounded passes, not one exact resize (which
        # is off by a level on 6-15% of the pixels, 0.1 level low on average).
        off = np.abs(pixels[0] - reference)
        assert off.max() <= 1.01 * multiplier, name
        assert np.mean(off > 0.5 * multiplier) < 0.01, name
        served, expected = classify(pixels)[0], classify(reference[None])[0]
        assert served.argmax() == expected.argmax(), name
        top = np.argsort(served)[::-1][:5]
        assert np.abs(served[top] - expected[top]).max() <= DEFAULT_MAX_PROBABILITY_DIFF, name


def test_a_bad_image_beside_good_ones_fails_only_itself(twin) -> None:
    good = _photos()["1024"]
    alone = twin.preprocess_one(good)
    huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(huge, "PNG")
    rgba = io.BytesIO()
    Image.new("RGBA", (300, 300), (10, 20, 30, 128)).save(rgba, "PNG")
    requests = [
        [good], [good[: len(good) // 2]], [b""], [b"not an image"], [huge.getvalue()],
        [rgba.getvalue()], [good, good],
    ]  # fmt: skip
    results = twin.preprocess(requests)
    assert np.array_equal(results[0][0], alone) and np.array_equal(results[-1][1], alone)
    messages = [result for result in results if isinstance(result, str)]
    assert len(messages) == 5, messages
    assert "damaged JPEG data" in messages[0]
    assert "empty input" in messages[1]
    assert "not a recognised image" in messages[2]
    assert "above the limit" in messages[3]
    assert "alpha" in messages[4] and "--preprocess python" in messages[4]


def test_without_the_intake_one_damaged_image_fails_the_whole_dali_batch(twin) -> None:
    """Why the intake checks every image first: DALI's decoder fails its batch."""
    good = _photos()["512"]
    geometry = twin.intake.geometry(512, 512)
    encoded = [np.frombuffer(good, np.uint8), np.frombuffer(good[:-4000], np.uint8)]
    with pytest.raises(RuntimeError):
        twin.run_batch(encoded, *([part] * 2 for part in geometry))


def test_the_per_request_pixel_budget_holds_on_the_dali_path(dali_repository) -> None:
    twin = DaliTwin(SPEC, max_batch_size=8, max_request_pixels=3_000_000)
    photo = _photos()["1920x1080"]  # 2.07 MP: one fits, two do not
    ok, refused = twin.preprocess([[photo], [photo, photo]])
    assert not isinstance(ok, str)
    assert isinstance(refused, str) and "per-request budget of 3000000 pixels" in refused


def test_the_dali_path_needs_the_gpu_target() -> None:
    with pytest.raises(ValueError, match="needs the gpu target"):
        ServingOptions(target="cpu", preprocess="dali")


def test_make_test_installs_the_dali_extra_the_project_declares() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    (spec,) = re.findall(r"^DALI_SPEC := (\S+)$", makefile, re.MULTILINE)
    assert f'dali = ["{spec}"]' in pyproject
    # Never part of `make demo`'s install: only the test and fidelity targets need it.
    assert "$(DALI)" in re.search(r"^test:.*?\n\n", makefile, re.MULTILINE | re.DOTALL)[0]
    assert "$(DALI)" not in re.search(r"^demo:.*?\n\n", makefile, re.MULTILINE | re.DOTALL)[0]
