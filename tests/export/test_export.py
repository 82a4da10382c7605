"""The exporter: ONNX parity with PyTorch, and repositories Triton's own schema accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from tvision_export import configs, contract
from tvision_export.exporter import ExportResult, validation_photo
from tvision_export.onnx_export import (
    ExportValidationError,
    build_module,
    torch_reference,
    validate_onnx,
    validation_inputs,
)
from tvision_export.options import TARGET_DEFAULTS, ServingOptions
from tvision_export.repository import ClassifierSource, ModelNames, write_version
from tvision_export.spec import DEFAULT_SPEC, PreprocessSpec


def _configs(repository: Path) -> dict[str, configs.model_config_pb2.ModelConfig]:
    return {
        path.parent.name: configs.parse(path.read_text())
        for path in sorted(repository.glob("*/config.pbtxt"))
    }


def _gpu_repository(source: ClassifierSource, tmp_path: Path, **overrides: object) -> Path:
    repository = tmp_path / "gpu_repository"
    options = ServingOptions(target="gpu", **overrides)
    write_version(repository, DEFAULT_SPEC.name, source, options)
    return repository


def test_onnx_matches_torch_on_random_input_and_a_real_photo(cpu_export: ExportResult) -> None:
    report = cpu_export.validation
    assert report.atol == DEFAULT_SPEC.validation.atol
    assert {check.input_name for check in report.checks} >= {"photo coffee", "random batch of 3"}
    # The report names the largest difference over all its checks (validate_onnx raised if
    # it was over atol; the test below shows that it would have).
    assert report.max_abs_diff == max(check.max_abs_diff for check in report.checks)
    photo_check = next(check for check in report.checks if check.input_name == "photo coffee")
    assert photo_check.onnx_top1 == photo_check.reference_top1 == [967]  # ImageNet "espresso"


def test_validation_fails_loudly_when_onnx_and_torch_disagree(cpu_export: ExportResult) -> None:
    import torch

    module = build_module(DEFAULT_SPEC)
    # A torch module that really differs from the exported graph: softmax applied twice.
    skewed = torch.nn.Sequential(module, torch.nn.Softmax(dim=-1)).eval()
    with pytest.raises(ExportValidationError) as raised:
        validate_onnx(
            cpu_export.written.classifier_onnx,
            contract.ONNX_INPUT,
            torch_reference(skewed, "logits"),
            validation_inputs(DEFAULT_SPEC.preprocess, validation_photo()),
            DEFAULT_SPEC.validation.atol,
        )
    assert len(raised.value.failures) >= 3  # every input is reported, not only the first
    assert "exceeds atol" in str(raised.value)


@pytest.mark.parametrize("offset_in_atol", [0.5, 3.0])
def test_the_tolerance_decides_and_the_largest_difference_is_named(
    cpu_export: ExportResult, offset_in_atol: float
) -> None:
    """The real exported graph against a reference moved by a known amount on one score of
    every input: half of atol passes, and the report gives that difference as the largest;
    three times atol raises the typed error, which names that difference for every input."""
    atol = DEFAULT_SPEC.validation.atol
    offset = offset_in_atol * atol
    exact = torch_reference(build_module(DEFAULT_SPEC), DEFAULT_SPEC.outputs)

    def perturbed(batch: np.ndarray) -> np.ndarray:
        expected = exact(batch).copy()
        expected[:, 0] += offset  # class 0 ("tench"): no input's top class
        return expected

    inputs = validation_inputs(DEFAULT_SPEC.preprocess, validation_photo())
    # ONNX Runtime and PyTorch agree far more closely than atol (below 1e-6 here), so the
    # difference the validation sees is the offset, give or take that.
    agreement = 0.1 * atol
    assert cpu_export.validation.max_abs_diff < agreement
    onnx_path = cpu_export.written.classifier_onnx
    if offset < atol:
        report = validate_onnx(onnx_path, contract.ONNX_INPUT, perturbed, inputs, atol)
        assert report.max_abs_diff == pytest.approx(offset, abs=agreement)
        return
    with pytest.raises(ExportValidationError) as raised:
        validate_onnx(onnx_path, contract.ONNX_INPUT, perturbed, inputs, atol)
    failures = raised.value.failures
    assert len(failures) == len(inputs)  # every input, each with its own difference
    for name, failure in zip(inputs, failures, strict=True):
        found = re.fullmatch(
            rf"{re.escape(name)}: max \|onnx - reference\| = (\S+) exceeds atol (\S+)", failure
        )
        assert found, failure
        assert float(found.group(1)) == pytest.approx(offset, abs=agreement)
        assert float(found.group(2)) == atol


def test_every_cpu_config_parses_as_triton_model_config(cpu_repository: Path) -> None:
    parsed = _configs(cpu_repository)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    assert set(parsed) == set(names.all())
    assert parsed[names.ensemble].platform == "ensemble"
    assert parsed[names.preprocess].backend == "python"
    assert parsed[names.classifier].backend == "python"
    onnx_file = cpu_repository / names.classifier / "1" / contract.MODEL_ONNX_FILE
    assert onnx_file.stat().st_size > 1_000_000


def test_both_composing_models_batch_dynamically_and_the_ensemble_fits(cpu_repository) -> None:
    parsed = _configs(cpu_repository)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    for name in (names.preprocess, names.classifier):
        batching = parsed[name].dynamic_batching
        assert list(batching.preferred_batch_size) == [4, 8]
        assert batching.max_queue_delay_microseconds > 0
        assert batching.default_queue_policy.max_queue_size > 0
    smallest = min(parsed[names.preprocess].max_batch_size, parsed[names.classifier].max_batch_size)
    assert 0 < parsed[names.ensemble].max_batch_size <= smallest


def test_the_door_is_bounded_and_reads_each_request_alone(cpu_repository) -> None:
    """The intake model (the ensemble's first step) has the same queue policy as the steps
    behind it, and executes batches of exactly one: it never waits to fill a batch and
    its only preferred size is 1, so the batcher never hands it two requests at once."""
    parsed = _configs(cpu_repository)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    door = parsed[names.intake].dynamic_batching
    assert list(door.preferred_batch_size) == [1]
    assert door.max_queue_delay_microseconds == 0
    defaults = ServingOptions()
    assert door.default_queue_policy.max_queue_size == defaults.max_queue_size == 64
    assert door.default_queue_policy.default_timeout_microseconds == 1_000_000
    assert door.default_queue_policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert (
        door.default_queue_policy == parsed[names.preprocess].dynamic_batching.default_queue_policy
    )


def test_ensemble_wires_preprocess_into_classifier(cpu_repository: Path) -> None:
    parsed = _configs(cpu_repository)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    steps = parsed[names.ensemble].ensemble_scheduling.step
    assert [step.model_name for step in steps] == [names.intake, names.preprocess, names.classifier]
    intake, preprocess, classifier = steps
    assert (
        intake.output_map[contract.INTAKE_OUTPUT] == preprocess.input_map[contract.ENSEMBLE_INPUT]
    )
    assert (
        preprocess.output_map[contract.PREPROCESS_OUTPUT]
        == (classifier.input_map[contract.ONNX_INPUT])
    )
    # The intake step takes requests one at a time (batches of exactly one).
    assert list(parsed[names.intake].dynamic_batching.preferred_batch_size) == [1]
    classifier_output = parsed[names.classifier].output[0]
    assert classifier_output.label_filename == contract.LABELS_FILE
    assert list(classifier_output.dims) == [1000]


def test_preprocessing_spec_travels_in_the_config(cpu_repository: Path) -> None:
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    parameters = _configs(cpu_repository)[names.preprocess].parameters
    spec = json.loads(parameters["preprocess_spec"].string_value)
    assert PreprocessSpec(**{**spec, "mean": tuple(spec["mean"]), "std": tuple(spec["std"])}) == (
        DEFAULT_SPEC.preprocess
    )
    model_py = (cpu_repository / names.preprocess / "1" / "model.py").read_text()
    assert "127" not in model_py and "224" not in model_py  # nothing model-specific in code


def test_labels_file_has_one_line_per_class(cpu_repository: Path) -> None:
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    for model in (names.ensemble, names.classifier):
        lines = (cpu_repository / model / contract.LABELS_FILE).read_text().splitlines()
        assert len(lines) == 1000
        assert lines[967] == "espresso"


def test_gpu_target_uses_onnxruntime_on_gpu_with_batching(default_source, tmp_path) -> None:
    repository = _gpu_repository(default_source, tmp_path)
    parsed = _configs(repository)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    classifier = parsed[names.classifier]
    assert classifier.platform == "onnxruntime_onnx"
    assert not classifier.backend
    assert classifier.instance_group[0].kind == configs.model_config_pb2.ModelInstanceGroup.KIND_GPU
    # The gpu target's own defaults (ServingOptions(target="gpu")), not the 2-core cpu ones.
    gpu_defaults = TARGET_DEFAULTS["gpu"]
    assert classifier.max_batch_size == gpu_defaults["max_batch_size"]
    assert (
        tuple(classifier.dynamic_batching.preferred_batch_size)
        == (gpu_defaults["preferred_batch_sizes"])
    )
    assert not classifier.optimization.execution_accelerators.gpu_execution_accelerator
    assert not (repository / names.classifier / "1" / "model.py").exists()
    preprocess = parsed[names.preprocess]
    assert preprocess.instance_group[0].kind == configs.model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert preprocess.instance_group[0].count == gpu_defaults["pod_cpus"] - 1


def test_gpu_fp16_adds_the_tensorrt_accelerator(default_source, tmp_path) -> None:
    repository = _gpu_repository(default_source, tmp_path, fp16=True)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    classifier = _configs(repository)[names.classifier]
    (accelerator,) = classifier.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"


def test_a_misspelled_config_field_fails_at_export_time() -> None:
    config = configs.preprocess_config("m", "{}", [3, 224, 224], ServingOptions())
    config["dynamic_batching"]["prefered_batch_size"] = [4]
    with pytest.raises(json_format.ParseError, match="prefered_batch_size"):
        configs.render(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target": "tpu"}, "target"),
        ({"fp16": True}, "gpu target"),
        ({"max_batch_size": 4, "preferred_batch_sizes": (8,)}, "exceed max_batch_size"),
        ({"preprocess_instances": 0}, "preprocess_instances"),
        ({"pod_cpus": 4, "preprocess_instances": 7}, "do not fit pod_cpus 4"),
    ],
)
def test_serving_options_reject_inconsistent_values(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        ServingOptions(**overrides)


def test_reference_preprocessing_matches_the_spec_formula() -> None:
    from PIL import Image

    from tvision_export.reference import reference_preprocess

    image = Image.new("RGB", (300, 256), (255, 127, 0))
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pixels = reference_preprocess(buffer.getvalue(), DEFAULT_SPEC.preprocess)
    assert pixels.shape == (3, 224, 224)
    expected = [(255 - 127) / 128, 0.0, (0 - 127) / 128]
    assert np.allclose(pixels[:, 100, 100], expected, atol=1e-6)


def test_an_nhwc_spec_exports_nhwc_and_validates(tmp_path) -> None:
    """The spec's layout means what it says: the exported graph takes NHWC input."""
    import dataclasses

    import onnx

    from tvision_export.exporter import export_model

    nhwc = dataclasses.replace(
        DEFAULT_SPEC,
        name="lite0_nhwc",
        preprocess=dataclasses.replace(DEFAULT_SPEC.preprocess, layout="NHWC"),
    )
    result = export_model(nhwc, tmp_path / "repository", ServingOptions())
    # Every input was compared (validate_onnx raises over atol, as tested above).
    assert {check.input_name for check in result.validation.checks} >= {"random batch of 3"}
    graph_input = onnx.load(str(result.written.classifier_onnx)).graph.input[0]
    dims = [d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim]
    assert dims[1:] == [224, 224, 3]
    photo = next(c for c in result.validation.checks if c.input_name.startswith("photo"))
    assert photo.onnx_top1 == [967]  # espresso, through NHWC preprocessing and the graph


def test_export_cli_flags_reach_the_configs(tmp_path) -> None:
    from tests.helpers import run_tvision

    repository = tmp_path / "repository"
    completed = run_tvision(
        "export", "--repository", str(repository), "--target", "gpu", "--fp16",
        "--spec", "tvision_export.spec:EFFICIENTNET_LITE0", "--keep-versions", "3",
        "--max-image-pixels", "1000000", "--max-image-bytes", "2000000",
        "--queue-timeout-us", "123456", "--decode", "exact", timeout_s=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    parsed = _configs(repository)
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    classifier = parsed[names.classifier]
    assert classifier.platform == "onnxruntime_onnx"
    (accelerator,) = classifier.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert all(config.version_policy.latest.num_versions == 3 for config in parsed.values())
    preprocess = parsed[names.preprocess]
    assert preprocess.parameters[contract.PARAM_MAX_IMAGE_PIXELS].string_value == "1000000"
    assert preprocess.parameters[contract.PARAM_MAX_IMAGE_BYTES].string_value == "2000000"
    assert preprocess.parameters[contract.PARAM_DECODE].string_value == "exact"
    policy = preprocess.dynamic_batching.default_queue_policy
    assert policy.default_timeout_microseconds == 123456
    bad = run_tvision("export", "--repository", str(repository), "--fp16", timeout_s=120)
    assert bad.returncode == 2 and "fp16" in bad.stderr


def test_reference_scales_16_bit_grayscale_like_the_server() -> None:
    import io

    from PIL import Image

    from tvision_export.reference import reference_preprocess
    from tvision_export.samples import sample_photo

    gray = Image.open(sample_photo("coffee").path).convert("L")
    encoded = {}
    for name, image in (
        ("8", gray),
        ("16", Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)),
    ):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        encoded[name] = buffer.getvalue()
    eight = reference_preprocess(encoded["8"], DEFAULT_SPEC.preprocess)
    sixteen = reference_preprocess(encoded["16"], DEFAULT_SPEC.preprocess)
    assert np.abs(eight - sixteen).max() <= 1 / 128 + 1e-6  # the same picture, not white
