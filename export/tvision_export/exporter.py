"""The export pipeline: spec -> ONNX -> validation -> new repository version."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tvision_export import contract, onnx_export
from tvision_export.onnx_export import ValidationReport
from tvision_export.options import ServingOptions
from tvision_export.repository import ClassifierSource, WrittenVersion, write_version
from tvision_export.samples import sample_photo
from tvision_export.spec import ModelSpec

# Called with a short description of each step as it starts.
StepCallback = Callable[[str], None]

# The real photo every export validates on and warms the server up with.
VALIDATION_PHOTO = "coffee"


@dataclass(frozen=True)
class ExportResult:
    written: WrittenVersion
    validation: ValidationReport
    labels_count: int


def validation_photo() -> tuple[str, bytes]:
    """The bundled photo used to validate exports, as (name, encoded bytes)."""
    photo = sample_photo(VALIDATION_PHOTO)
    return photo.name, photo.path.read_bytes()


def warmup_image() -> bytes:
    """The validation photo as a small JPEG, for the preprocessing model's warmup."""
    from PIL import Image

    buffer = io.BytesIO()
    photo = Image.open(sample_photo(VALIDATION_PHOTO).path).convert("RGB")
    photo.resize((320, 240)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def classifier_source(
    spec: ModelSpec, onnx_path: Path, labels: list[str] | None = None
) -> ClassifierSource:
    """What the repository writer needs for a spec's exported ONNX file."""
    return ClassifierSource(
        onnx_path=onnx_path,
        onnx_input=contract.ONNX_INPUT,
        onnx_output=contract.ONNX_OUTPUT,
        input_dims=spec.input_dims,
        labels=spec.load_labels() if labels is None else labels,
        preprocess_spec_json=spec.preprocess.to_json(),
        warmup_image=warmup_image(),
    )


def export_model(
    spec: ModelSpec,
    repository: Path,
    options: ServingOptions,
    on_step: StepCallback = lambda _step: None,
) -> ExportResult:
    """Export ``spec`` to ONNX, validate it against PyTorch, and write a new version.

    Raises:
        onnx_export.ExportValidationError: ONNX Runtime disagrees with PyTorch.
        ValueError: the labels do not match the model's output size.
        OSError: the repository cannot be written; earlier versions stay intact.
    """
    on_step(f"Loading {spec.name} ({spec.weights_source})")
    module = onnx_export.build_module(spec)
    labels = spec.load_labels()
    with tempfile.TemporaryDirectory(prefix="tvision-export-") as work_dir:
        onnx_path = Path(work_dir) / contract.MODEL_ONNX_FILE
        on_step(f"Exporting to ONNX (opset {spec.opset}, dynamic batch, {spec.preprocess.layout})")
        onnx_export.export_onnx(spec, module, onnx_path)
        on_step(f"Validating ONNX Runtime against PyTorch (atol {spec.validation.atol:g})")
        report = onnx_export.validate_onnx(
            onnx_path,
            contract.ONNX_INPUT,
            onnx_export.torch_reference(module, spec.outputs),
            onnx_export.validation_inputs(spec.preprocess, validation_photo()),
            spec.validation.atol,
        )
        num_outputs = report.checks[0].shape[1]
        if num_outputs != len(labels):
            raise ValueError(f"the model has {num_outputs} outputs but {len(labels)} labels")
        on_step(f"Writing the {options.target} model repository")
        source = classifier_source(spec, onnx_path, labels)
        written = write_version(repository, spec.name, source, options)
    return ExportResult(written=written, validation=report, labels_count=len(labels))
