"""Triton ``config.pbtxt`` builders, from the ``ServingOptions`` (``options.py``) of an export.

Each builder returns a plain dict in the JSON form of Triton's ``ModelConfig`` protobuf.
``render`` passes it through ``json_format.ParseDict`` and writes protobuf text, so a
misspelled field or a wrong enum raises here, at export time, instead of at deployment.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tvision_export import contract, quality
from tvision_export.options import ServingOptions

# The TensorRT engine cache inside the container; the gpu component mounts a volume here.
TENSORRT_CACHE_DIR = "/cache/tensorrt"

# Every key the ONNX Runtime backend documents for its "tensorrt" gpu_execution_accelerator
# (triton-inference-server/onnxruntime_backend, README.md, "ONNX Runtime with TensorRT
# optimization" and its parameter mapping table). The exporter writes only keys from here.
TENSORRT_ACCELERATOR_KEYS = frozenset({
    "precision_mode", "max_workspace_size_bytes", "int8_calibration_table_name",
    "int8_use_native_calibration_table", "trt_max_partition_iterations",
    "trt_min_subgraph_size", "trt_dla_enable", "trt_dla_core", "trt_engine_cache_enable",
    "trt_engine_cache_path", "trt_engine_cache_prefix", "trt_dump_subgraphs",
    "trt_force_sequential_engine_build", "trt_context_memory_sharing_enable",
    "trt_layer_norm_fp32_fallback", "trt_timing_cache_enable", "trt_timing_cache_path",
    "trt_force_timing_cache", "trt_detailed_build_log", "trt_build_heuristics_enable",
    "trt_sparsity_enable", "trt_builder_optimization_level", "trt_auxiliary_streams",
    "trt_tactic_sources", "trt_extra_plugin_lib_paths", "trt_profile_min_shapes",
    "trt_profile_max_shapes", "trt_profile_opt_shapes", "trt_cuda_graph_enable",
    "trt_dump_ep_context_model", "trt_ep_context_file_path", "trt_ep_context_embed_mode",
})  # fmt: skip


def warmup_batch_sizes(options: ServingOptions) -> list[int]:
    """Every preferred batch size and max_batch_size, in order: the sizes a warmed server
    must have run once before it reports ready."""
    return sorted({*options.preferred_batch_sizes, options.max_batch_size})


def tensorrt_parameters(onnx_input: str, input_dims: list[int], options: ServingOptions
                        ) -> dict[str, str]:  # fmt: skip
    """The TensorRT accelerator's parameters: FP16, engines and timing cache kept on the
    cache volume, and one optimisation profile spanning batch 1 to max_batch_size (optimised
    at the largest preferred size), so no batch size builds an engine of its own."""
    shape = "x".join(str(dim) for dim in input_dims)
    optimal = max(options.preferred_batch_sizes, default=options.max_batch_size)
    return {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": TENSORRT_CACHE_DIR,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": TENSORRT_CACHE_DIR,
        "trt_profile_min_shapes": f"{onnx_input}:1x{shape}",
        "trt_profile_opt_shapes": f"{onnx_input}:{optimal}x{shape}",
        "trt_profile_max_shapes": f"{onnx_input}:{options.max_batch_size}x{shape}",
    }


def render(config: dict[str, Any]) -> str:
    """Validate ``config`` as Triton's ``ModelConfig`` and return protobuf text.

    Raises:
        google.protobuf.json_format.ParseError: a field or value is not valid ModelConfig.
    """
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


def to_text(config: model_config_pb2.ModelConfig) -> str:
    """Protobuf text of an already-validated ``ModelConfig`` message."""
    return text_format.MessageToString(config)


def parse(text: str) -> model_config_pb2.ModelConfig:
    """Parse protobuf text as Triton's ``ModelConfig``.

    Raises:
        google.protobuf.text_format.ParseError: the text is not valid ModelConfig.
    """
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _batching(options: ServingOptions) -> dict[str, Any]:
    return {"dynamic_batching": dynamic_batching(options)}


def dynamic_batching(options: ServingOptions) -> dict[str, Any]:
    return {
        "preferred_batch_size": list(options.preferred_batch_sizes),
        "max_queue_delay_microseconds": options.max_queue_delay_us,
        "default_queue_policy": _queue_policy(options),
    }


def _queue_policy(options: ServingOptions) -> dict[str, Any]:
    """A full queue rejects at once, a request waiting too long is rejected: UNAVAILABLE,
    which the SDK retries elsewhere within its budget."""
    return {
        "timeout_action": "REJECT",
        "default_timeout_microseconds": options.queue_timeout_us,
        "allow_timeout_override": True,
        "max_queue_size": options.max_queue_size,
    }


def parameters(values: dict[str, str]) -> dict[str, Any]:
    return {key: {"string_value": value} for key, value in values.items()}


def image_limits(options: ServingOptions) -> dict[str, str]:
    return {
        contract.PARAM_MAX_IMAGE_PIXELS: str(options.max_image_pixels),
        contract.PARAM_MAX_IMAGE_BYTES: str(options.max_image_bytes),
        contract.PARAM_MAX_REQUEST_PIXELS: str(options.max_request_pixels),
    }


def _version_policy(options: ServingOptions) -> dict[str, Any]:
    return {"latest": {"num_versions": options.keep_versions}}


def intake_config(name: str, options: ServingOptions) -> dict[str, Any]:
    """The ensemble's first step. It executes batches of one, so each request is read alone
    and a malformed BYTES tensor fails only itself (see triton_models/intake.py): its only
    preferred size is 1 and it never waits to fill a batch. It has a dynamic batcher all the
    same, for the queue policy: the door is bounded like every step behind it."""
    return {
        **_python_model_on_cpu(name, options),
        "output": [{"name": contract.INTAKE_OUTPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "dynamic_batching": {
            "preferred_batch_size": [1],
            "max_queue_delay_microseconds": 0,
            "default_queue_policy": _queue_policy(options),
        },
    }


def _python_model_on_cpu(name: str, options: ServingOptions) -> dict[str, Any]:
    """What the intake and preprocessing models share: encoded images in, CPU instances."""
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": options.max_batch_size,
        "version_policy": _version_policy(options),
        "input": [{"name": contract.ENSEMBLE_INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "instance_group": [{"kind": "KIND_CPU", "count": options.preprocess_instances}],
    }


def preprocess_config(
    name: str, preprocess_spec_json: str, input_dims: list[int], options: ServingOptions
) -> dict[str, Any]:
    return {
        **_python_model_on_cpu(name, options),
        "output": [
            {
                "name": contract.PREPROCESS_OUTPUT,
                "data_type": "TYPE_FP32",
                "dims": list(input_dims),
            }
        ],
        **_batching(options),
        "model_warmup": [
            {
                "name": "sample photo",
                "batch_size": 1,
                "inputs": {
                    contract.ENSEMBLE_INPUT: {
                        "data_type": "TYPE_STRING",
                        "dims": [1],
                        "input_data_file": contract.WARMUP_IMAGE_FILE,
                    }
                },
            }
        ],
        "parameters": preprocess_parameters(preprocess_spec_json, options),
    }


def preprocess_parameters(preprocess_spec_json: str, options: ServingOptions) -> dict[str, Any]:
    """What the python preprocessing reads (and the DALI path's intake, which checks images
    with the same code)."""
    return parameters(
        {
            contract.PARAM_PREPROCESS_SPEC: preprocess_spec_json,
            contract.PARAM_DECODE: options.decode,
            contract.PARAM_STRICT_JPEG: contract.encode_bool(options.strict_jpeg),
            **image_limits(options),
        }
    )


def classifier_config(
    name: str,
    onnx_input: str,
    onnx_output: str,
    input_dims: list[int],
    labels: list[str],
    options: ServingOptions,
) -> dict[str, Any]:
    """The ensemble's last step: ONNX Runtime in the python backend on the cpu target (with
    the prediction metrics), the onnxruntime backend on KIND_GPU (with TensorRT FP16 when
    asked) on the gpu target.

    Raises:
        quality.QualityReferenceError: the options' quality reference does not fit.
    """
    runtime = (
        _classifier_on_cpu(options, labels)
        if options.target == "cpu"
        else _classifier_on_gpu(onnx_input, input_dims, options)
    )
    return {
        "name": name,
        "max_batch_size": options.max_batch_size,
        "version_policy": _version_policy(options),
        "input": [{"name": onnx_input, "data_type": "TYPE_FP32", "dims": list(input_dims)}],
        "output": [
            {
                "name": onnx_output,
                "data_type": "TYPE_FP32",
                "dims": [len(labels)],
                "label_filename": contract.LABELS_FILE,
            }
        ],
        **_batching(options),
        "model_warmup": _classifier_warmup(onnx_input, input_dims, options),
        **runtime,
    }


def _classifier_warmup(
    onnx_input: str, input_dims: list[int], options: ServingOptions
) -> list[dict[str, Any]]:
    """Each size the batcher will execute runs once before the model reports ready."""
    return [
        {
            "name": f"zeros at batch {batch}",
            "batch_size": batch,
            "inputs": {
                onnx_input: {"data_type": "TYPE_FP32", "dims": list(input_dims), "zero_data": True}
            },
        }
        for batch in warmup_batch_sizes(options)
    ]


def _classifier_on_cpu(options: ServingOptions, labels: list[str]) -> dict[str, Any]:
    return {
        "backend": "python",
        "instance_group": [{"kind": "KIND_CPU", "count": options.classifier_instances}],
        "parameters": parameters(
            {
                contract.PARAM_INTRA_OP_THREADS: str(options.intra_op_threads),
                contract.PARAM_ALLOW_SPINNING: contract.encode_bool(options.allow_spinning),
                contract.PARAM_PREDICTION_METRICS: contract.encode_bool(options.prediction_metrics),
                **quality.classifier_parameters(
                    labels, options.low_confidence, options.quality_reference
                ),
            }
        ),
    }


def _classifier_on_gpu(
    onnx_input: str, input_dims: list[int], options: ServingOptions
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "platform": "onnxruntime_onnx",
        "instance_group": [{"kind": "KIND_GPU", "count": options.classifier_instances}],
    }
    if options.fp16:
        tensorrt = {
            "name": "tensorrt",
            "parameters": tensorrt_parameters(onnx_input, input_dims, options),
        }
        config["optimization"] = {
            "execution_accelerators": {"gpu_execution_accelerator": [tensorrt]}
        }
    return config


def _intake_outputs(options: ServingOptions) -> dict[str, str]:
    """The intake's outputs in the ensemble: the checked images, or on the DALI path the
    four per-image tensors its DALI model reads (the same names on both sides of the step)."""
    dali_tensors = (
        contract.DALI_ENCODED, contract.DALI_UPRIGHT, contract.DALI_SIZE,
        contract.DALI_CROP_POSITION,
    )  # fmt: skip
    if options.preprocess == "dali":
        return {tensor: tensor.lower() for tensor in dali_tensors}
    return {contract.INTAKE_OUTPUT: contract.ENSEMBLE_CHECKED}


def ensemble_config(
    name: str,
    intake_name: str,
    preprocess_name: str,
    classifier_name: str,
    onnx_input: str,
    onnx_output: str,
    num_classes: int,
    options: ServingOptions,
) -> dict[str, Any]:
    checked = _intake_outputs(options)
    return {
        "name": name,
        "platform": "ensemble",
        "version_policy": _version_policy(options),
        # Must not exceed the composing models' max_batch_size; batching happens in them.
        "max_batch_size": options.max_batch_size,
        "input": [{"name": contract.ENSEMBLE_INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [
            {
                "name": contract.ENSEMBLE_OUTPUT,
                "data_type": "TYPE_FP32",
                "dims": [num_classes],
                "label_filename": contract.LABELS_FILE,
            }
        ],
        # Read by the SDK (model_info().limits) to reject oversized images before sending.
        "parameters": parameters(image_limits(options)),
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": intake_name,
                    "model_version": -1,
                    "input_map": {contract.ENSEMBLE_INPUT: contract.ENSEMBLE_INPUT},
                    "output_map": checked,
                },
                {
                    "model_name": preprocess_name,
                    "model_version": -1,
                    "input_map": dict(checked)
                    if options.preprocess == "dali"
                    else {contract.ENSEMBLE_INPUT: contract.ENSEMBLE_CHECKED},
                    "output_map": {contract.PREPROCESS_OUTPUT: contract.ENSEMBLE_PIXELS},
                },
                {
                    "model_name": classifier_name,
                    "model_version": -1,
                    "input_map": {onnx_input: contract.ENSEMBLE_PIXELS},
                    "output_map": {onnx_output: contract.ENSEMBLE_OUTPUT},
                },
            ]
        },
    }
