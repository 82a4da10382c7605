"""Bring your own ONNX classifier: an existing file, a labels file and preprocessing flags.

The user's file is never modified. Its input name, layout (NCHW or NHWC) and size are read
from the graph; a fixed or a dynamic spatial size both work, and so does a batch axis fixed
at 1 (common in files exported by other tools). A model that outputs logits gets a Softmax
node appended in the repository's copy, so every served score is a probability.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from tvision_export.contract import MODEL_ONNX_FILE, OutputKind
from tvision_export.exporter import validation_photo, warmup_image
from tvision_export.onnx_export import (
    ExportValidationError,
    Reference,
    ValidationReport,
    append_softmax,
    to_probabilities,
    validate_onnx,
    validation_inputs,
)
from tvision_export.options import ServingOptions
from tvision_export.repository import ClassifierSource, WrittenVersion, write_version
from tvision_export.spec import PreprocessSpec, ValidationSpec, read_labels


class OnnxImportError(ValueError):
    """The ONNX file, its labels or the preprocessing flags cannot be served as given."""


@dataclass(frozen=True)
class OnnxClassifierInfo:
    input_name: str
    output_name: str
    layout: Literal["NCHW", "NHWC"]
    height: int | None  # None: dynamic
    width: int | None
    batch_fixed_at_one: bool
    num_classes: int


def _dims(value_info: object) -> list[int | None]:
    shape = value_info.type.tensor_type.shape  # type: ignore[attr-defined]
    return [dim.dim_value if dim.HasField("dim_value") else None for dim in shape.dim]


def inspect_onnx(path: Path) -> OnnxClassifierInfo:
    """Read what serving needs from an ONNX image classifier.

    Raises:
        OnnxImportError: the graph is not a single-input, single-output float32 image
            classifier; the message says what was found.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise OnnxImportError(f"{path} is not a readable ONNX file: {exc}") from exc
    initializers = {initializer.name for initializer in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise OnnxImportError(
            f"{path.name}: expected one input and one output, found {len(inputs)} inputs "
            f"({[i.name for i in inputs]}) and {len(outputs)} outputs ({[o.name for o in outputs]})"
        )
    (graph_input,), (graph_output,) = inputs, outputs
    float_type = onnx.TensorProto.FLOAT
    for value, role in ((graph_input, "input"), (graph_output, "output")):
        if value.type.tensor_type.elem_type != float_type:
            type_name = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
            raise OnnxImportError(f"{path.name}: {role} {value.name!r} is {type_name}, not FLOAT")
    input_dims = _dims(graph_input)
    if len(input_dims) != 4:
        raise OnnxImportError(
            f"{path.name}: input {graph_input.name!r} has shape {input_dims}; "
            "an image classifier takes [batch, 3, H, W] or [batch, H, W, 3]"
        )
    if input_dims[1] == 3:
        layout: Literal["NCHW", "NHWC"] = "NCHW"
        height, width = input_dims[2], input_dims[3]
    elif input_dims[3] == 3:
        layout = "NHWC"
        height, width = input_dims[1], input_dims[2]
    else:
        raise OnnxImportError(
            f"{path.name}: cannot find 3 colour channels in input shape {input_dims}"
        )
    output_dims = _dims(graph_output)
    if len(output_dims) != 2 or output_dims[1] is None:
        raise OnnxImportError(
            f"{path.name}: output {graph_output.name!r} has shape {output_dims}; "
            "expected [batch, classes] with a fixed number of classes"
        )
    return OnnxClassifierInfo(
        input_name=graph_input.name,
        output_name=graph_output.name,
        layout=layout,
        height=height,
        width=width,
        batch_fixed_at_one=input_dims[0] == 1,
        num_classes=int(output_dims[1]),
    )


def prepare_for_serving(source: Path, destination: Path, outputs: OutputKind) -> str:
    """Write the repository's copy; append a Softmax for logits. Returns the output name.

    Raises:
        OnnxImportError: a Softmax cannot be appended to this graph.
    """
    import onnx

    model = onnx.load(str(source))
    if outputs == "logits":
        try:
            model = append_softmax(model)
        except ValueError as exc:
            raise OnnxImportError(str(exc)) from exc
    onnx.save(model, str(destination))
    return str(model.graph.output[0].name)


def original_reference(original: Path, input_name: str, outputs: OutputKind) -> Reference:
    """The user's own file through ONNX Runtime, as probabilities: what the copy must give."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] > 1 and _batch_fixed_at_one(session):
            raw = np.concatenate([session.run(None, {input_name: one[None]})[0] for one in batch])
        else:
            (raw,) = session.run(None, {input_name: batch})
        return to_probabilities(raw, outputs)

    return run


def _batch_fixed_at_one(session: object) -> bool:
    return session.get_inputs()[0].shape[0] == 1  # type: ignore[attr-defined,no-any-return]


def import_onnx(
    onnx_path: Path,
    labels_path: Path,
    name: str,
    preprocess: PreprocessSpec,
    outputs: OutputKind,
    repository: Path,
    options: ServingOptions,
    atol: float = ValidationSpec().atol,
) -> tuple[WrittenVersion, ValidationReport]:
    """Write an existing ONNX classifier into the repository, beside any other models.

    The repository's copy is validated against the original file exactly as an export is
    validated against PyTorch: random inputs and a real photo, within ``atol``.

    Raises:
        OnnxImportError: the file, the labels or the flags do not fit together, or the
            repository's copy does not reproduce the original.
        OSError: the repository cannot be written; earlier versions stay intact.
    """
    info = inspect_onnx(onnx_path)
    labels = _labels_for(labels_path, info)
    preprocess, options = _fitted_to(info, preprocess, options)
    with tempfile.TemporaryDirectory(prefix="tvision-import-") as work_dir:
        prepared = Path(work_dir) / MODEL_ONNX_FILE
        served_output = prepare_for_serving(onnx_path, prepared, outputs)
        try:
            report = validate_onnx(
                prepared,
                info.input_name,
                original_reference(onnx_path, info.input_name, outputs),
                validation_inputs(preprocess, validation_photo(), info.batch_fixed_at_one),
                atol,
            )
        except ExportValidationError as exc:
            raise OnnxImportError(str(exc)) from exc
        source = ClassifierSource(
            onnx_path=prepared,
            onnx_input=info.input_name,
            onnx_output=served_output,
            input_dims=preprocess.input_dims,
            labels=labels,
            preprocess_spec_json=preprocess.to_json(),
            warmup_image=warmup_image(),
        )
        return write_version(repository, name, source, options), report


def _labels_for(labels_path: Path, info: OnnxClassifierInfo) -> list[str]:
    """The labels file's non-empty lines, one per class the model outputs.

    Raises:
        OnnxImportError: the counts differ.
    """
    labels = read_labels(labels_path)
    if len(labels) != info.num_classes:
        raise OnnxImportError(
            f"{labels_path.name} has {len(labels)} labels but the model outputs "
            f"{info.num_classes} classes"
        )
    return labels


def _fitted_to(
    info: OnnxClassifierInfo, preprocess: PreprocessSpec, options: ServingOptions
) -> tuple[PreprocessSpec, ServingOptions]:
    """The preprocessing and serving options, fitted to the model's input: its layout, and
    one image per execution if its batch is fixed at one.

    Raises:
        OnnxImportError: the model's fixed input size is not the crop.
    """
    for size, axis in ((info.height, "height"), (info.width, "width")):
        if size is not None and size != preprocess.crop_px:
            raise OnnxImportError(
                f"the model's input {axis} is fixed at {size} but the crop is "
                f"{preprocess.crop_px}; pass --crop-px {size}"
            )
    if preprocess.layout != info.layout:
        preprocess = replace(preprocess, layout=info.layout)
    if info.batch_fixed_at_one:
        # One image per execution: Triton still queues requests, it cannot batch them.
        options = replace(options, max_batch_size=1, preferred_batch_sizes=(1,))
    return preprocess, options
