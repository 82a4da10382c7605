"""Every name that crosses a process boundary, written once.

The exporter writes these names into configs and files; the Triton models read them back
inside the server; ``validate``, the benchmark and the tests read them too. The exporter
copies this file beside each Triton model it writes (it runs inside Triton, where the
``tvision_export`` package is not installed), so this module imports nothing but the
standard library.

The SDK never imports the exporter: it reads tensor names and limits from the server's
model metadata and config at run time (``Client.model_info``). It holds one name of this
contract, ``PARAM_MAX_IMAGE_BYTES``, to know which advertised limit bounds an image it is
about to send; ``tests/export/test_sdk_agreement.py`` ties its copy to this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

# -- tensors ------------------------------------------------------------------------------

# The ensemble: encoded image bytes in, class probabilities out.
ENSEMBLE_INPUT = "IMAGE"
ENSEMBLE_OUTPUT = "PROBABILITIES"
# The intake model's output: the same encoded images, checked one request at a time.
INTAKE_OUTPUT = "IMAGE_CHECKED"
# The ensemble's internal tensor between intake and preprocessing.
ENSEMBLE_CHECKED = "image"
# The preprocessing model's output, which the ensemble feeds to the classifier.
PREPROCESS_OUTPUT = "PIXELS"
# The ensemble's internal tensor between preprocessing and the classifier, the second and
# third of its three steps (intake, preprocess, classifier).
ENSEMBLE_PIXELS = "pixels"
# The DALI path (``--preprocess dali``): what its intake hands the DALI model, per image.
DALI_ENCODED = "ENCODED"  # the encoded bytes, zero-padded to the request's longest image
DALI_UPRIGHT = "UPRIGHT_HW"  # the decoded image's (height, width), turned upright
DALI_SIZE = "RESIZED_HW"  # the reference's resized (height, width)
DALI_CROP_POSITION = "CROP_POSITION"  # where the center crop starts, (y, x) in [0, 1]
# Tensor names of an ONNX file written by ``tvision export`` (imported files keep theirs).
ONNX_INPUT = "input"
ONNX_OUTPUT = "probabilities"

# -- output kinds -------------------------------------------------------------------------

# What a classifier's raw output holds: a served model always ends in probabilities.
OutputKind = Literal["logits", "probabilities"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("logits", "probabilities")

# -- files --------------------------------------------------------------------------------

CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
MODEL_PY_FILE = "model.py"
MODEL_ONNX_FILE = "model.onnx"
CONTRACT_FILE = "contract.py"
# The DALI backend autoserializes the pipeline in this file at load (``--preprocess dali``).
DALI_PY_FILE = "dali.py"
# The python preprocessing, copied beside the DALI path's intake, which uses its checks.
PREPROCESS_PY_FILE = "preprocess.py"
# The classifier's prediction metrics, copied beside its ``model.py`` (cpu target).
PREDICTION_METRICS_FILE = "prediction_metrics.py"
# A real photo under ``<preprocess model>/warmup/``, decoded at load so the first request is warm.
WARMUP_DIR = "warmup"
WARMUP_IMAGE_FILE = "sample_image"

# -- model names ----------------------------------------------------------------------------

INTAKE_SUFFIX = "_intake"
PREPROCESS_SUFFIX = "_preprocess"
CLASSIFIER_SUFFIX = "_classifier"

# -- config parameters ---------------------------------------------------------------------

# Preprocessing model (and, for the SDK's limits, the ensemble).
PARAM_PREPROCESS_SPEC = "preprocess_spec"
PARAM_MAX_IMAGE_PIXELS = "max_image_pixels"
PARAM_MAX_IMAGE_BYTES = "max_image_bytes"
PARAM_MAX_REQUEST_PIXELS = "max_request_pixels"
PARAM_STRICT_JPEG = "strict_jpeg"
PARAM_DECODE = "decode"
# Classifier model on the cpu target.
PARAM_INTRA_OP_THREADS = "intra_op_num_threads"
PARAM_ALLOW_SPINNING = "allow_spinning"
# Classifier model: what its prediction metrics watch (``prediction_metrics.py``).
PARAM_PREDICTION_METRICS = "prediction_metrics"
PARAM_LOW_CONFIDENCE = "low_confidence_below"
PARAM_WATCHED_CLASSES = "watched_classes"
PARAM_QUALITY_REFERENCE = "quality_reference"
# Any model, set only by the server's stub watchdog: no model reads it; changing it is what
# makes Triton reload a model (tvision/server/watchdog.py).
PARAM_RELOAD = "tvision_reload"

# How JPEGs are decoded, by strategy name: the value is the headroom N of a reduced decode.
# "exact" decodes at full size, as the reference preprocessing does. "draft-Nx" lets libjpeg
# decode at 1/2, 1/4 or 1/8 scale in the DCT domain, never below N times the resize target.
# The README's fidelity table (``tvision fidelity``) measures each against the reference.
DECODE_HEADROOM: dict[str, int] = {"exact": 0, "draft-4x": 4, "draft-3x": 3, "draft-2x": 2}
# The fastest strategy that meets the fidelity bound on the broad photo set (README).
DEFAULT_DECODE = "draft-3x"

# -- prediction metrics ----------------------------------------------------------------------

# Triton custom metrics the classifier exports on the metrics port, labelled by the
# ensemble's name (``model``) and version (README, "Watching predictions in production").
METRIC_TOP1 = "tvision_top1_probability"  # histogram of each prediction's top-1 probability
METRIC_PREDICTIONS = "tvision_predictions_total"  # counter per predicted class (``class``)
METRIC_LOW_CONFIDENCE = "tvision_low_confidence_total"  # top-1 under the export's threshold
# Gauges of the reference recorded by ``tvision evaluate --save-reference``.
METRIC_REFERENCE_SHARE = "tvision_reference_class_share"
METRIC_REFERENCE_LOW_CONFIDENCE = "tvision_reference_low_confidence_share"
TOP1_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
# The ``class`` of every prediction of a class that is not watched.
OTHER_CLASS = "other"
# Up to this many labels, every class has its own series; above it, only the classes the
# reference holds most often (one series each, per pod and version), the rest in OTHER_CLASS.
WATCHED_CLASS_LIMIT = 100

_TRUE, _FALSE = "true", "false"


def encode_bool(value: bool) -> str:
    """Config parameters are strings; booleans travel as ``"true"``/``"false"``."""
    return _TRUE if value else _FALSE


def decode_bool(text: str) -> bool:
    """Read a boolean written by ``encode_bool``.

    Raises:
        ValueError: the text is neither ``"true"`` nor ``"false"``.
    """
    if text not in (_TRUE, _FALSE):
        raise ValueError(f"expected {_TRUE!r} or {_FALSE!r}, got {text!r}")
    return text == _TRUE


def parameters_of(model_config: Mapping[str, object]) -> dict[str, str]:
    """A model config's parameters as ``{key: string_value}``, from the JSON Triton passes."""
    raw = model_config.get("parameters", {})
    assert isinstance(raw, Mapping)
    return {str(key): str(value["string_value"]) for key, value in raw.items()}
