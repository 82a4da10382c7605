"""Triton ``config.pbtxt`` builders.

Each builder returns a plain dict in the JSON form of Triton's ``ModelConfig`` protobuf.
``render`` passes it through ``json_format.ParseDict`` and writes protobuf text, so a
misspelled field or a wrong enum raises here, at export time, instead of at deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

Target = Literal["cpu", "gpu"]
TARGETS: tuple[Target, ...] = ("cpu", "gpu")

ENSEMBLE_INPUT = "IMAGE"
ENSEMBLE_OUTPUT = "PROBABILITIES"
PREPROCESS_OUTPUT = "PIXELS"
LABELS_FILE = "labels.txt"
# A real photo, under <preprocess model>/warmup/, decoded at load so the first request is warm.
WARMUP_IMAGE_FILE = "sample_image"


@dataclass(frozen=True)
class ServingOptions:
    """Serving behaviour fixed at export time. Defaults are the measured best on 2 CPU cores.

    See the README's Performance section for the benchmark behind each default.
    """

    target: Target = "cpu"
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    preprocess_instances: int = 2
    classifier_instances: int = 2
    # ONNX Runtime threads per classifier instance on the cpu target (0 = one per core).
    # One thread in each of two instances beats two threads in one: batches overlap with
    # decoding instead of waiting for each other.
    intra_op_threads: int = 1
    # ONNX Runtime's idle threads spin by default; on shared cores that steals decode time.
    allow_spinning: bool = False
    # Overload: requests beyond this queue length, or waiting longer, are rejected at once.
    max_queue_size: int = 256
    queue_timeout_us: int = 5_000_000
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 20 * 1024 * 1024
    jpeg_draft: bool = True
    # False only for the benchmark's naive baseline (no batching, one request per execute).
    dynamic_batching: bool = True
    batched_execute: bool = True
    crop_box_resize: bool = True
    fp16: bool = False
    keep_versions: int = 2

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        too_big = [size for size in self.preferred_batch_sizes if size > self.max_batch_size]
        if too_big:
            raise ValueError(
                f"preferred batch sizes {too_big} exceed max_batch_size {self.max_batch_size}"
            )
        if self.fp16 and self.target != "gpu":
            raise ValueError("fp16 (TensorRT accelerator) needs the gpu target")
        for name in ("preprocess_instances", "classifier_instances", "keep_versions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def render(config: dict[str, Any]) -> str:
    """Validate ``config`` as Triton's ``ModelConfig`` and return protobuf text.

    Raises:
        google.protobuf.json_format.ParseError: a field or value is not valid ModelConfig.
    """
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


def parse(text: str) -> model_config_pb2.ModelConfig:
    """Parse protobuf text as Triton's ``ModelConfig``.

    Raises:
        google.protobuf.text_format.ParseError: the text is not valid ModelConfig.
    """
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def naive_baseline(options: ServingOptions) -> ServingOptions:
    """The python_backend example's setup, written only for the benchmark: per-request
    preprocessing with a full decode and a full-image resize, no dynamic batching, one
    instance of each model, and ONNX Runtime's default threading."""
    return replace(
        options,
        dynamic_batching=False,
        batched_execute=False,
        jpeg_draft=False,
        crop_box_resize=False,
        preprocess_instances=1,
        classifier_instances=1,
        # ONNX Runtime's own defaults: a thread per core, spinning while idle.
        intra_op_threads=0,
        allow_spinning=True,
    )


def _batching(options: ServingOptions) -> dict[str, Any]:
    if not options.dynamic_batching:
        return {}
    return {"dynamic_batching": _dynamic_batching(options)}


def _dynamic_batching(options: ServingOptions) -> dict[str, Any]:
    return {
        "preferred_batch_size": list(options.preferred_batch_sizes),
        "max_queue_delay_microseconds": options.max_queue_delay_us,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": options.queue_timeout_us,
            "allow_timeout_override": True,
            "max_queue_size": options.max_queue_size,
        },
    }


def _version_policy(options: ServingOptions) -> dict[str, Any]:
    return {"latest": {"num_versions": options.keep_versions}}


def preprocess_config(
    name: str, preprocess_spec_json: str, input_dims: list[int], options: ServingOptions
) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": options.max_batch_size,
        "version_policy": _version_policy(options),
        "input": [{"name": ENSEMBLE_INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [
            {
                "name": PREPROCESS_OUTPUT,
                "data_type": "TYPE_FP32",
                "dims": list(input_dims),
            }
        ],
        "instance_group": [{"kind": "KIND_CPU", "count": options.preprocess_instances}],
        **_batching(options),
        "model_warmup": [
            {
                "name": "sample photo",
                "batch_size": 1,
                "inputs": {
                    ENSEMBLE_INPUT: {
                        "data_type": "TYPE_STRING",
                        "dims": [1],
                        "input_data_file": WARMUP_IMAGE_FILE,
                    }
                },
            }
        ],
        "parameters": {
            "preprocess_spec": {"string_value": preprocess_spec_json},
            "max_image_pixels": {"string_value": str(options.max_image_pixels)},
            "max_image_bytes": {"string_value": str(options.max_image_bytes)},
            "jpeg_draft": {"string_value": "true" if options.jpeg_draft else "false"},
            "batched_execute": {"string_value": "true" if options.batched_execute else "false"},
            "crop_box_resize": {"string_value": "true" if options.crop_box_resize else "false"},
        },
    }


def classifier_config(
    name: str,
    onnx_input: str,
    onnx_output: str,
    input_dims: list[int],
    num_classes: int,
    options: ServingOptions,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "max_batch_size": options.max_batch_size,
        "version_policy": _version_policy(options),
        "input": [
            {
                "name": onnx_input,
                "data_type": "TYPE_FP32",
                "dims": list(input_dims),
            }
        ],
        "output": [
            {
                "name": onnx_output,
                "data_type": "TYPE_FP32",
                "dims": [num_classes],
                "label_filename": LABELS_FILE,
            }
        ],
        **_batching(options),
        "model_warmup": [
            {
                "name": "zeros",
                "batch_size": max(options.preferred_batch_sizes, default=1),
                "inputs": {
                    onnx_input: {
                        "data_type": "TYPE_FP32",
                        "dims": list(input_dims),
                        "zero_data": True,
                    }
                },
            }
        ],
    }
    if options.target == "cpu":
        config["backend"] = "python"
        config["instance_group"] = [{"kind": "KIND_CPU", "count": options.classifier_instances}]
        config["parameters"] = {
            "intra_op_num_threads": {"string_value": str(options.intra_op_threads)},
            "allow_spinning": {"string_value": "true" if options.allow_spinning else "false"},
        }
    else:
        config["platform"] = "onnxruntime_onnx"
        config["instance_group"] = [{"kind": "KIND_GPU", "count": options.classifier_instances}]
        if options.fp16:
            config["optimization"] = {
                "execution_accelerators": {
                    "gpu_execution_accelerator": [
                        {
                            "name": "tensorrt",
                            "parameters": {
                                "precision_mode": "FP16",
                                "max_workspace_size_bytes": "1073741824",
                            },
                        }
                    ]
                }
            }
    return config


def ensemble_config(
    name: str,
    preprocess_name: str,
    classifier_name: str,
    onnx_input: str,
    onnx_output: str,
    num_classes: int,
    options: ServingOptions,
) -> dict[str, Any]:
    return {
        "name": name,
        "platform": "ensemble",
        "version_policy": _version_policy(options),
        # Must not exceed the composing models' max_batch_size; batching happens in them.
        "max_batch_size": options.max_batch_size,
        "input": [{"name": ENSEMBLE_INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [
            {
                "name": ENSEMBLE_OUTPUT,
                "data_type": "TYPE_FP32",
                "dims": [num_classes],
                "label_filename": LABELS_FILE,
            }
        ],
        # Read by the SDK (model_info().limits) to reject oversized images before sending.
        "parameters": {
            "max_image_pixels": {"string_value": str(options.max_image_pixels)},
            "max_image_bytes": {"string_value": str(options.max_image_bytes)},
        },
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": preprocess_name,
                    "model_version": -1,
                    "input_map": {ENSEMBLE_INPUT: ENSEMBLE_INPUT},
                    "output_map": {PREPROCESS_OUTPUT: "pixels"},
                },
                {
                    "model_name": classifier_name,
                    "model_version": -1,
                    "input_map": {onnx_input: "pixels"},
                    "output_map": {onnx_output: ENSEMBLE_OUTPUT},
                },
            ]
        },
    }
