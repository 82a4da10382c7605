"""The export pipeline: spec -> ONNX -> validation -> new repository version."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvision_export import configs, onnx_export
from tvision_export.configs import ServingOptions
from tvision_export.onnx_export import ValidationReport
from tvision_export.reference import reference_preprocess
from tvision_export.repository import ClassifierSource, WrittenVersion, write_version
from tvision_export.samples import sample_photo
from tvision_export.spec import ModelSpec

# Called with a short description of each step as it starts.
StepCallback = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    written: WrittenVersion
    validation: ValidationReport
    labels_count: int


def validation_inputs(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at two batch sizes, and a real photo through the reference preprocessing."""
    generator = np.random.default_rng(seed)
    size = spec.input_size_px
    photo = sample_photo("coffee")
    photo_tensor = reference_preprocess(photo.path.read_bytes(), spec.preprocess)
    return {
        "random batch of 1": generator.standard_normal((1, 3, size, size), dtype=np.float32),
        "random batch of 3": generator.standard_normal((3, 3, size, size), dtype=np.float32),
        f"photo {photo.name}": photo_tensor[np.newaxis],
    }


def export_model(
    spec: ModelSpec,
    repository: Path,
    options: ServingOptions,
    on_step: StepCallback = lambda _step: None,
    naive_baseline: bool = False,
) -> ExportResult:
    """Export ``spec`` to ONNX, validate it against PyTorch, and write a new version.

    ``naive_baseline`` also writes ``<name>_naive``: the unoptimised configuration the
    benchmark compares against. It is never needed for serving.

    Raises:
        onnx_export.ExportValidationError: ONNX Runtime disagrees with PyTorch.
        ValueError: the labels do not match the model's output size.
        OSError: the repository cannot be written; earlier versions stay intact.
    """
    on_step(f"Loading {spec.name} ({spec.weights_source})")
    module = onnx_export.build_probability_module(spec)
    labels = spec.load_labels()
    with tempfile.TemporaryDirectory(prefix="tvision-export-") as work_dir:
        onnx_path = Path(work_dir) / "model.onnx"
        on_step(f"Exporting to ONNX (opset {spec.opset}, dynamic batch)")
        onnx_export.export_onnx(spec, module, onnx_path)
        on_step(f"Validating ONNX Runtime against PyTorch (atol {spec.validation.atol:g})")
        report = onnx_export.validate_onnx(spec, module, onnx_path, validation_inputs(spec))
        num_outputs = report.checks[0].shape[1]
        if num_outputs != len(labels):
            raise ValueError(f"the model has {num_outputs} outputs but {len(labels)} labels")
        on_step(f"Writing the {options.target} model repository")
        source = ClassifierSource(
            onnx_path=onnx_path,
            onnx_input=onnx_export.ONNX_INPUT_NAME,
            onnx_output=onnx_export.ONNX_OUTPUT_NAME,
            input_dims=[3, spec.input_size_px, spec.input_size_px],
            labels=labels,
            preprocess_spec_json=spec.preprocess.to_json(),
        )
        written = write_version(repository, spec.name, source, options)
        if naive_baseline:
            write_version(repository, f"{spec.name}_naive", source, configs.naive_baseline(options))
    return ExportResult(written=written, validation=report, labels_count=len(labels))
