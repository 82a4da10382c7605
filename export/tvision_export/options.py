"""The serving options an export fixes, and each target's defaults.

``ServingOptions`` is the one table of serving options; each field carries the help text
(and choices) its CLI flag shows, which ``tvision.cli._options`` turns into flags and
``KEY=VALUE`` parsing. Nothing here parses a command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from tvision_export import contract

Target = Literal["cpu", "gpu"]
TARGETS: tuple[Target, ...] = ("cpu", "gpu")
# Where the gpu target decodes and resizes: the python backend, or DALI on the GPU.
PREPROCESSORS = ("python", "dali")


def check_target(target: str) -> Target:
    """``target`` as a ``Target``.

    Raises:
        ValueError: it is not one of ``TARGETS``.
    """
    if target == "cpu":
        return "cpu"
    if target == "gpu":
        return "gpu"
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


class _ByTarget:
    """The default of a field whose default depends on the target (``TARGET_DEFAULTS``)."""

    def __repr__(self) -> str:
        return "<the target's default>"


# Typed Any so that a field of any type can default to it; resolved in __post_init__.
BY_TARGET: Any = _ByTarget()


def _option(default: Any, help_text: str, choices: Sequence[str] = ()) -> Any:
    """A ``ServingOptions`` field with the help text (and choices) its CLI flag shows."""
    return field(default=default, metadata={"help": help_text, "choices": tuple(choices)})


@dataclass(frozen=True)
class ServingOptions:
    """Serving behaviour fixed at export time. Defaults are the measured best on 2 CPU cores.

    The fields marked ``BY_TARGET`` take the target's default (``TARGET_DEFAULTS``) unless
    they are given, so ``ServingOptions(target="gpu")`` is the gpu target with its own
    defaults; a given ``pod_cpus`` sizes the preprocessing instances unless they are given
    too. ``dataclasses.replace`` keeps every value it is not told to change. See the
    README's Performance section for the benchmark behind each default.
    """

    target: Target = _option(
        "cpu", "cpu: ONNX Runtime in the python backend; gpu: KIND_GPU", choices=TARGETS
    )
    max_batch_size: int = _option(BY_TARGET, "largest batch a composing model executes")
    preferred_batch_sizes: tuple[int, ...] = _option(
        BY_TARGET, "batch sizes the dynamic batcher aims for (comma-separated)"
    )
    max_queue_delay_us: int = _option(BY_TARGET, "longest wait to fill a preferred batch")
    preprocess_instances: int = _option(BY_TARGET, "preprocessing model instances (CPU)")
    classifier_instances: int = _option(BY_TARGET, "classifier model instances")
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
    # seconds (README, "Secure and bounded by default", "Overload rejected at the door").
    max_queue_size: int = _option(BY_TARGET, "queued requests beyond this are rejected at once")
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
    # for about a quarter more JPEG preprocessing CPU (README, "Reliability", "Damaged JPEG
    # data is refused").
    strict_jpeg: bool = _option(True, "reject JPEGs whose data libjpeg finds damaged")
    # Prediction metrics (README, "Watching predictions in production").
    prediction_metrics: bool = _option(
        True, "export the classifier's prediction metrics (cpu target)"
    )
    low_confidence: float = _option(
        0.5, "top-1 probability under which a served prediction counts as low confidence"
    )
    quality_reference: str = _option(
        "", "a reference from `tvision evaluate --save-reference`: the class mix and "
        "confidence the served predictions are compared with (empty: none)",
    )  # fmt: skip
    fp16: bool = _option(False, "TensorRT FP16 accelerator (gpu target only)")
    # python stays the gpu target's default until nvJPEG's pixels are measured against the
    # reference on a GPU (README, "The DALI path"): the CPU twin meets the bound here.
    preprocess: str = _option(
        "python", "python: decode and resize in the python backend on the pod's cores; "
        "dali: nvJPEG decode and GPU resize in the DALI backend (gpu target only)",
        choices=PREPROCESSORS,
    )  # fmt: skip
    keep_versions: int = _option(2, "how many versions of each model Triton keeps loaded")
    # The pod's CPU request on the gpu target: one core serves Triton's endpoints, the
    # intake model and the GPU feed; each other core runs one preprocessing instance.
    pod_cpus: int = _option(
        BY_TARGET, "CPU cores the serving pod requests; sets preprocess_instances to "
        "pod_cpus - 1 unless that is given (0: not used)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        target = check_target(self.target)
        for name, value in _target_defaults(self, target).items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
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
        if not 0 < self.low_confidence <= 1:
            raise ValueError(f"low_confidence must be in (0, 1], got {self.low_confidence}")
        if self.fp16 and self.target != "gpu":
            raise ValueError("fp16 (TensorRT accelerator) needs the gpu target")
        if self.preprocess not in PREPROCESSORS:
            raise ValueError(f"preprocess must be one of {PREPROCESSORS}, got {self.preprocess!r}")
        if self.preprocess == "dali" and self.target != "gpu":
            raise ValueError(
                "preprocess dali (nvJPEG in the DALI backend) needs the gpu target; the cpu "
                "target's server has no DALI backend"
            )
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


# The defaults that differ by target: every field whose default is BY_TARGET. The cpu
# target's are measured on 2 cores (README, "Performance"). The gpu target's are reasoned,
# not measured here (no GPU): README, "The gpu target".
TARGET_DEFAULTS: dict[Target, dict[str, Any]] = {
    "cpu": {
        "max_batch_size": 32,
        "preferred_batch_sizes": (4, 8),
        "max_queue_delay_us": 2000,
        "preprocess_instances": 2,
        "classifier_instances": 2,
        "max_queue_size": 64,
        "pod_cpus": 0,
    },
    "gpu": {
        # A GPU runs a small CNN most efficiently at batches of tens: let the batcher form
        # them, but wait at most 1 ms for one to fill (at thousands of requests per second
        # a batch of 16 arrives in a few ms; below that, waiting only adds latency).
        "max_batch_size": 64,
        "preferred_batch_sizes": (16, 32, 64),
        "max_queue_delay_us": 1000,
        # One classifier instance per GPU: a second mostly contends for the same SMs.
        "classifier_instances": 1,
        # The gpu component requests 8 cores: 7 preprocessing instances (from pod_cpus).
        "pod_cpus": 8,
        "preprocess_instances": 2,
        # Thousands of images per second drain a deeper queue in the same fraction of a
        # second.
        "max_queue_size": 512,
    },
}


def default_of(name: str, target: Target = "cpu") -> Any:
    """The default of the field ``name`` on ``target``, before any ``pod_cpus`` sizing.

    Raises:
        KeyError: no such field.
    """
    option = next(option for option in fields(ServingOptions) if option.name == name)
    return TARGET_DEFAULTS[target][name] if option.default is BY_TARGET else option.default


def _target_defaults(options: ServingOptions, target: Target) -> dict[str, Any]:
    """The values of the fields ``options`` was not given: ``target``'s defaults, with the
    preprocessing instances sized to a ``pod_cpus`` (given or the target's)."""
    unset = {
        option.name for option in fields(options) if getattr(options, option.name) is BY_TARGET
    }
    values = {name: TARGET_DEFAULTS[target][name] for name in unset}
    pod_cpus = values.get("pod_cpus", options.pod_cpus)
    if "preprocess_instances" in unset and pod_cpus:
        values["preprocess_instances"] = max(1, pod_cpus - 1)
    return values
