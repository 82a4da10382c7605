"""The contract round trip: every rendered config is read back by each model's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from tvision_export import configs, contract
from tvision_export.options import ServingOptions
from tvision_export.spec import DEFAULT_SPEC
from tvision_export.triton_models.preprocess import preprocessor_from_config


def _as_triton_passes_it(config: dict) -> dict:
    """Render through ModelConfig, then to the JSON Triton hands ``initialize``."""
    message = configs.parse(configs.render(config))
    return json.loads(json_format.MessageToJson(message, preserving_proto_field_name=True))


@pytest.mark.parametrize("decode", sorted(contract.DECODE_HEADROOM))
def test_preprocess_config_round_trips_into_the_preprocessor(decode) -> None:
    options = ServingOptions(max_image_pixels=1234567, max_image_bytes=7654321, decode=decode)
    config = configs.preprocess_config(
        "m_preprocess", DEFAULT_SPEC.preprocess.to_json(), DEFAULT_SPEC.input_dims, options
    )
    preprocessor = preprocessor_from_config(_as_triton_passes_it(config))
    assert (preprocessor.max_image_pixels, preprocessor.max_image_bytes) == (1234567, 7654321)
    assert preprocessor.decode_strategy == decode
    assert preprocessor.resize_short_px == DEFAULT_SPEC.preprocess.resize_short_px
    assert preprocessor.crop_px == DEFAULT_SPEC.preprocess.crop_px


@pytest.mark.parametrize("allow_spinning", [True, False])
def test_classifier_config_carries_what_its_model_reads(allow_spinning) -> None:
    options = ServingOptions(intra_op_threads=3, allow_spinning=allow_spinning)
    config = configs.classifier_config(
        "m_classifier",
        contract.ONNX_INPUT,
        contract.ONNX_OUTPUT,
        [3, 224, 224],
        [f"class {index}" for index in range(1000)],
        options,
    )
    parameters = contract.parameters_of(_as_triton_passes_it(config))
    assert int(parameters[contract.PARAM_INTRA_OP_THREADS]) == 3
    assert contract.decode_bool(parameters[contract.PARAM_ALLOW_SPINNING]) is allow_spinning


def test_ensemble_limits_are_what_the_sdk_reads() -> None:
    options = ServingOptions(max_image_bytes=4242)
    config = configs.ensemble_config(
        "m",
        "m_intake",
        "m_preprocess",
        "m_classifier",
        contract.ONNX_INPUT,
        contract.ONNX_OUTPUT,
        1000,
        options,
    )
    parsed = _as_triton_passes_it(config)
    limits = contract.parameters_of(parsed)
    from tvision_client._core import image_byte_limit
    from tvision_client._types import ModelInfo

    info = ModelInfo(
        name="m", versions=["1"], input_name=contract.ENSEMBLE_INPUT, input_datatype="BYTES",
        output_name=contract.ENSEMBLE_OUTPUT, num_classes=1000, max_batch_size=32, limits=limits,
    )  # fmt: skip
    # The SDK reads the server's image limit from these parameters, under its own name.
    assert image_byte_limit(info, max_message_bytes=64 << 20) == 4242
    assert [tensor["name"] for tensor in parsed["input"]] == [contract.ENSEMBLE_INPUT]
    assert [tensor["name"] for tensor in parsed["output"]] == [contract.ENSEMBLE_OUTPUT]


def test_booleans_travel_as_true_and_false_only() -> None:
    assert [contract.encode_bool(v) for v in (True, False)] == ["true", "false"]
    assert contract.decode_bool("true") is True and contract.decode_bool("false") is False
    with pytest.raises(ValueError, match="'True'"):
        contract.decode_bool("True")


def test_the_repository_holds_the_contract_beside_each_python_model(cpu_repository) -> None:
    from tvision_export.repository import ModelNames

    names = ModelNames.for_model(DEFAULT_SPEC.name)
    source = contract.__file__
    for model in (names.preprocess, names.classifier):
        copied = cpu_repository / model / "1" / contract.CONTRACT_FILE
        assert copied.read_bytes() == Path(source).read_bytes()
