"""The DALI path (``--preprocess dali``): its ``dali.py``, rendered from a model's spec,
and the configs of its intake and DALI models.

``triton_models/dali.py`` holds the pipeline with a block of constants; this module
replaces that block with the spec's numbers and the config's batch size, so the file in the
repository holds everything the DALI backend needs and imports nothing but DALI.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from tvision_export import configs, contract
from tvision_export.options import ServingOptions

BLOCK_START = "# -- rendered from the model's spec "
BLOCK_END = "# -- end of the rendered block "
# CPU threads of the DALI pipeline (``num_threads``): they feed the GPU decoder its
# Huffman work and run the CPU fallback for images nvJPEG's hardware decoder refuses.
DALI_NUM_THREADS = 4


def template() -> str:
    return (resources.files("tvision_export") / "triton_models" / "dali.py").read_text("utf-8")


def render_dali_py(spec: dict[str, Any], max_batch_size: int) -> str:
    """``dali.py`` for a preprocessing spec (``PreprocessSpec`` fields, as a dict).

    Raises:
        ValueError: the template lost its block markers.
    """
    text = template()
    start, end = text.find(BLOCK_START), text.find(BLOCK_END)
    if start < 0 or end < start:
        raise ValueError("triton_models/dali.py has no block of rendered constants")
    end = text.index("\n", end) + 1
    scale = float(spec.get("scale", 1.0))
    mean = tuple(float(value) * scale for value in spec["mean"])
    std = tuple(float(value) * scale for value in spec["std"])
    layout = "HWC" if spec.get("layout", "NCHW") == "NHWC" else "CHW"
    block = "\n".join(
        [
            BLOCK_START.rstrip() + " (tvision_export.dali_model) " + "-" * 20,
            f"ENCODED = {contract.DALI_ENCODED!r}",
            f"UPRIGHT_HW = {contract.DALI_UPRIGHT!r}",
            f"RESIZED_HW = {contract.DALI_SIZE!r}",
            f"CROP_POSITION = {contract.DALI_CROP_POSITION!r}",
            f"CROP_PX = {int(spec['crop_px'])}",
            "# On 0-255 pixels: (pixel / scale - mean) / std == "
            "(pixel - mean * scale) / (std * scale).",
            f"MEAN = {mean!r}",
            f"STD = {std!r}",
            f"CHANNEL_ORDER = {spec.get('channel_order', 'RGB')!r}",
            f"OUTPUT_LAYOUT = {layout!r}",
            f"MAX_BATCH_SIZE = {int(max_batch_size)}",
            f"NUM_THREADS = {DALI_NUM_THREADS}",
            BLOCK_END.rstrip() + " " + "-" * 60,
            "",
        ]
    )
    return text[:start] + block + text[end:]


# Every model-level key the DALI backend documents (triton-inference-server/dali_backend,
# docs/config.md, "Model parameters"). The exporter writes only ``num_threads`` of them;
# the other parameters it writes (the spec and the image limits) are tvision's, for
# ``tvision validate``, and the backend ignores keys it does not know.
DALI_PARAMETER_KEYS = frozenset({"num_threads", "split_along_outer_axis"})


def intake_config(name: str, options: ServingOptions, spec_json: str) -> dict[str, Any]:
    """The DALI path's intake: one request at a time (so one bad image fails only its own
    request), on the pod's cores; it checks every image and computes its geometry
    (``triton_models/dali_intake.py``)."""
    config = configs.intake_config(name, options)
    config["output"] = [
        {"name": contract.DALI_ENCODED, "data_type": "TYPE_UINT8", "dims": [-1]},
        {"name": contract.DALI_UPRIGHT, "data_type": "TYPE_FP32", "dims": [2]},
        {"name": contract.DALI_SIZE, "data_type": "TYPE_FP32", "dims": [2]},
        {"name": contract.DALI_CROP_POSITION, "data_type": "TYPE_FP32", "dims": [2]},
    ]
    config["parameters"] = configs.preprocess_parameters(spec_json, options)
    return config


def preprocess_config(
    name: str, spec_json: str, input_dims: list[int], options: ServingOptions
) -> dict[str, Any]:
    """The DALI model: batches of requests from the dynamic batcher, on the GPU.

    The encoded images of different requests differ in length: ``allow_ragged_batch``
    lets Triton batch them without padding them to one shape (the DALI backend's own
    ResNet-50 benchmark repository does the same). One instance per GPU, as the DALI
    backend's README advises (more instances multiply DALI's memory pools)."""
    return {
        "name": name,
        "backend": "dali",
        "max_batch_size": options.max_batch_size,
        "version_policy": {"latest": {"num_versions": options.keep_versions}},
        "input": [
            {
                "name": contract.DALI_ENCODED,
                "data_type": "TYPE_UINT8",
                "dims": [-1],
                "allow_ragged_batch": True,
            },
            {"name": contract.DALI_UPRIGHT, "data_type": "TYPE_FP32", "dims": [2]},
            {"name": contract.DALI_SIZE, "data_type": "TYPE_FP32", "dims": [2]},
            {"name": contract.DALI_CROP_POSITION, "data_type": "TYPE_FP32", "dims": [2]},
        ],
        "output": [
            {"name": contract.PREPROCESS_OUTPUT, "data_type": "TYPE_FP32", "dims": input_dims}
        ],
        "instance_group": [{"kind": "KIND_GPU", "count": 1}],
        "dynamic_batching": configs.dynamic_batching(options),
        "parameters": configs.parameters(
            {
                "num_threads": str(DALI_NUM_THREADS),
                contract.PARAM_PREPROCESS_SPEC: spec_json,
                **configs.image_limits(options),
            }
        ),
    }
