"""Triton ``config.pbtxt`` builders.

Each builder returns a plain dict in the JSON form of Triton's ``ModelConfig`` protobuf.
``render`` passes it through ``json_format.ParseDict`` and writes protobuf text, so a
misspelled field or a wrong enum raises here, at export time, instead of at deployment.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tvision_export import contract

Target = Literal["cpu", "gpu"]
TARGETS: tuple[Target, ...] = ("cpu", "gpu")


def _option(default: Any, help_text: str, choices: Sequence[str] = ()) -> Any:
    """A ``ServingOptions`` field with the help text (and choices) its CLI flag shows."""
    return field(default=default, metadata={"help": help_text, "choices": tuple(choices)})


@dataclass(frozen=True)
class ServingOptions:
    """Serving behaviour fixed at export time. Defaults are the measured best on 2 CPU cores.

    This class is the one table of serving options: ``add_arguments`` makes a CLI flag of
    each field (with the help text below), and ``parse_assignments`` reads ``KEY=VALUE``
    pairs for ``tvision bench --set``. See the README's Performance section for the
    benchmark behind each default.
    """

    target: Target = _option(
        "cpu", "cpu: ONNX Runtime in the python backend; gpu: KIND_GPU", choices=TARGETS
    )
    max_batch_size: int = _option(32, "largest batch a composing model executes")
    preferred_batch_sizes: tuple[int, ...] = _option(
        (4, 8), "batch sizes the dynamic batcher aims for (comma-separated)"
    )
    max_queue_delay_us: int = _option(2000, "longest wait to fill a preferred batch")
    preprocess_instances: int = _option(2, "preprocessing model instances (CPU)")
    classifier_instances: int = _option(2, "classifier model instances")
    # One thread in each of two instances beats two threads in one: batches overlap with
    # decoding instead of waiting for each other.
    intra_op_threads: int = _option(
        1, "ONNX Runtime threads per classifier instance on the cpu target (0: one per core)"
    )
    # ONNX Runtime's idle threads spin by default; on shared cores that steals decode time.
    allow_spinning: bool = _option(False, "let ONNX Runtime's idle threads spin (cpu target)")
    # Overload: requests beyond this queue length, or waiting longer, are rejected at once,
    # at every step from the door (the intake model) on. 64 is about half a second of
    # preprocessing on 2 cores: a full server answers UNAVAILABLE instead of queueing for
    # seconds (README, "Overload").
    max_queue_size: int = _option(64, "queued requests beyond this are rejected at once")
    queue_timeout_us: int = _option(1_000_000, "queued requests older than this are rejected")
    max_image_pixels: int = _option(40_000_000, "largest image accepted, in pixels")
    max_image_bytes: int = _option(20 * 1024 * 1024, "largest encoded image accepted, in bytes")
    # See the README for what a request at this budget costs in CPU seconds.
    max_request_pixels: int = _option(
        48_000_000, "pixels of all the images in one request together (a CPU budget)"
    )
    decode: str = _option(
        contract.DEFAULT_DECODE,
        "how JPEGs are decoded: exact (full size, as the reference), or draft-Nx (libjpeg's "
        "DCT-domain 1/2-1/8 scaling, never below N times the resize target)",
        choices=tuple(contract.DECODE_HEADROOM),
    )
    # libjpeg decodes damaged data with only a warning; this turns it into a clear error,
    # for about a quarter more JPEG preprocessing CPU (README, "Bad input").
    strict_jpeg: bool = _option(True, "reject JPEGs whose data libjpeg finds damaged")
    fp16: bool = _option(False, "TensorRT FP16 accelerator (gpu target only)")
    keep_versions: int = _option(2, "how many versions of each model Triton keeps loaded")
    # The pod's CPU request on the gpu target: one core serves Triton's endpoints, the
    # intake model and the GPU feed; each other core runs one preprocessing instance.
    pod_cpus: int = _option(
        0, "CPU cores the serving pod requests; sets preprocess_instances to pod_cpus - 1 "
        "unless that is given (0: not used)",
    )  # fmt: skip

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
        if self.decode not in contract.DECODE_HEADROOM:
            raise ValueError(
                f"decode must be one of {tuple(contract.DECODE_HEADROOM)}, got {self.decode!r}"
            )
        if self.fp16 and self.target != "gpu":
            raise ValueError("fp16 (TensorRT accelerator) needs the gpu target")
        for name in ("preprocess_instances", "classifier_instances", "keep_versions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.pod_cpus < 0:
            raise ValueError("pod_cpus must be 0 (not used) or a number of cores")
        if self.pod_cpus and self.preprocess_instances > max(1, self.pod_cpus - 1):
            raise ValueError(
                f"{self.preprocess_instances} preprocess_instances do not fit pod_cpus "
                f"{self.pod_cpus} (one core serves Triton): at most {max(1, self.pod_cpus - 1)}"
            )

    @classmethod
    def for_target(cls, target: Target = "cpu", **given: Any) -> ServingOptions:
        """The options for ``target``: its defaults (TARGET_DEFAULTS), then ``given``.
        A given ``pod_cpus`` sizes the preprocessing instances unless they are given too.

        Raises:
            ValueError: the combination is not valid.
        """
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        values = {**TARGET_DEFAULTS[target], **given, "target": target}
        if values.get("pod_cpus") and "preprocess_instances" not in given:
            values["preprocess_instances"] = max(1, values["pod_cpus"] - 1)
        return cls(**values)

    # -- the one table, as CLI flags and as KEY=VALUE text ----------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | Any) -> None:
        """Add ``--max-batch-size`` and friends, one flag per field, defaulting to "not set"."""
        for option in fields(cls):
            flag = "--" + option.name.replace("_", "-")
            default = _show(option.default)
            gpu_default = TARGET_DEFAULTS["gpu"].get(option.name)
            if gpu_default is not None:
                default += f"; gpu target: {_show(gpu_default)}"
            help_text = f"{option.metadata['help']} (default: {default})"
            if isinstance(option.default, bool):
                parser.add_argument(
                    flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
                )
            elif option.metadata["choices"]:
                parser.add_argument(
                    flag, choices=option.metadata["choices"], default=None, help=help_text
                )
            else:
                parser.add_argument(
                    flag, type=_argparse_type(_converter(option.default)), default=None,
                    help=help_text, metavar=option.name.upper(),
                )  # fmt: skip

    @classmethod
    def from_arguments(cls, namespace: argparse.Namespace, **forced: Any) -> ServingOptions:
        """The options set on the command line, the defaults for the rest.

        Raises:
            ValueError: the combination is not valid.
        """
        given = {
            option.name: getattr(namespace, option.name)
            for option in fields(cls)
            if getattr(namespace, option.name, None) is not None
        }
        given.update(forced)
        return cls.for_target(given.pop("target", "cpu"), **given)

    @classmethod
    def parse_assignments(cls, assignments: Sequence[str]) -> dict[str, Any]:
        """``["classifier_instances=1", ...]`` -> typed overrides, as the flags parse them.

        Raises:
            ValueError: an unknown field or a value of the wrong form.
        """
        defaults = {option.name: option.default for option in fields(cls)}
        overrides: dict[str, Any] = {}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            if not sep or key not in defaults:
                raise ValueError(f"expected KEY=VALUE with KEY one of {sorted(defaults)}")
            overrides[key] = _converter(defaults[key])(text)
        return overrides


# Defaults that differ by target. The class's own defaults are the cpu target's, measured
# on 2 cores (README, "Performance"). The gpu target's are reasoned, not measured here (no
# GPU): README, "The gpu target".
TARGET_DEFAULTS: dict[Target, dict[str, Any]] = {
    "cpu": {},
    "gpu": {
        # A GPU runs a small CNN most efficiently at batches of tens: let the batcher form
        # them, but wait at most 1 ms for one to fill (at thousands of requests per second
        # a batch of 16 arrives in a few ms; below that, waiting only adds latency).
        "max_batch_size": 64,
        "preferred_batch_sizes": (16, 32, 64),
        "max_queue_delay_us": 1000,
        # One classifier instance per GPU: a second mostly contends for the same SMs.
        "classifier_instances": 1,
        # The gpu component requests 8 cores: 7 preprocessing instances.
        "pod_cpus": 8,
        # Thousands of images per second drain a deeper queue in the same fraction of a
        # second.
        "max_queue_size": 512,
    },
}

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


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _converter(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, tuple):
        return _parse_int_tuple
    return type(default)  # type: ignore[no-any-return]


def _argparse_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


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
    return {"dynamic_batching": _dynamic_batching(options)}


def _dynamic_batching(options: ServingOptions) -> dict[str, Any]:
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


def _parameters(values: dict[str, str]) -> dict[str, Any]:
    return {key: {"string_value": value} for key, value in values.items()}


def _image_limits(options: ServingOptions) -> dict[str, str]:
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
        "parameters": _parameters(
            {
                contract.PARAM_PREPROCESS_SPEC: preprocess_spec_json,
                contract.PARAM_DECODE: options.decode,
                contract.PARAM_STRICT_JPEG: contract.encode_bool(options.strict_jpeg),
                **_image_limits(options),
            }
        ),
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
                "label_filename": contract.LABELS_FILE,
            }
        ],
        **_batching(options),
        # Each size the batcher will execute runs once before the model reports ready.
        "model_warmup": [
            {
                "name": f"zeros at batch {batch}",
                "batch_size": batch,
                "inputs": {
                    onnx_input: {
                        "data_type": "TYPE_FP32",
                        "dims": list(input_dims),
                        "zero_data": True,
                    }
                },
            }
            for batch in warmup_batch_sizes(options)
        ],
    }
    if options.target == "cpu":
        config["backend"] = "python"
        config["instance_group"] = [{"kind": "KIND_CPU", "count": options.classifier_instances}]
        config["parameters"] = _parameters(
            {
                contract.PARAM_INTRA_OP_THREADS: str(options.intra_op_threads),
                contract.PARAM_ALLOW_SPINNING: contract.encode_bool(options.allow_spinning),
            }
        )
    else:
        config["platform"] = "onnxruntime_onnx"
        config["instance_group"] = [{"kind": "KIND_GPU", "count": options.classifier_instances}]
        if options.fp16:
            config["optimization"] = {
                "execution_accelerators": {
                    "gpu_execution_accelerator": [
                        {
                            "name": "tensorrt",
                            "parameters": tensorrt_parameters(onnx_input, input_dims, options),
                        }
                    ]
                }
            }
    return config


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
        "parameters": _parameters(_image_limits(options)),
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": intake_name,
                    "model_version": -1,
                    "input_map": {contract.ENSEMBLE_INPUT: contract.ENSEMBLE_INPUT},
                    "output_map": {contract.INTAKE_OUTPUT: contract.ENSEMBLE_CHECKED},
                },
                {
                    "model_name": preprocess_name,
                    "model_version": -1,
                    "input_map": {contract.ENSEMBLE_INPUT: contract.ENSEMBLE_CHECKED},
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
