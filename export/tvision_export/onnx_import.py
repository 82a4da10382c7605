"""Bring your own ONNX classifier: an existing file, a labels file and preprocessing flags.

The user's file is never modified. Its input name, layout (NCHW or NHWC) and size are read
from the graph; a fixed or a dynamic spatial size both work, and so does a batch axis fixed
at 1 (common in files exported by other tools). A model that outputs logits gets a Softmax
node appended in the repository's copy, so every served score is a probability.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tvision_export.configs import ServingOptions
from tvision_export.repository import ClassifierSource, WrittenVersion, write_version
from tvision_export.spec import PreprocessSpec

OutputKind = Literal["logits", "probabilities"]
SERVED_OUTPUT = "probabilities"


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
    """Write the repository's copy; append a Softmax for logits. Returns the output name."""
    import onnx

    model = onnx.load(str(source))
    if outputs == "probabilities":
        onnx.save(model, str(destination))
        return str(model.graph.output[0].name)
    logits = model.graph.output[0]
    softmax = onnx.helper.make_node(
        "Softmax", [logits.name], [SERVED_OUTPUT], axis=-1, name="tvision_softmax"
    )
    model.graph.node.append(softmax)
    served = onnx.helper.make_tensor_value_info(SERVED_OUTPUT, onnx.TensorProto.FLOAT, None)
    served.type.tensor_type.shape.CopyFrom(logits.type.tensor_type.shape)
    del model.graph.output[:]
    model.graph.output.append(served)
    if not any(
        opset.domain in ("", "ai.onnx") and opset.version >= 13 for opset in model.opset_import
    ):
        raise OnnxImportError("appending a Softmax over the last axis needs ONNX opset 13 or newer")
    onnx.checker.check_model(model)
    onnx.save(model, str(destination))
    return SERVED_OUTPUT


def _check_prepared(
    original: Path, prepared: Path, info: OnnxClassifierInfo, outputs: OutputKind, size: int
) -> None:
    """The served copy must compute the original's scores (softmax-ed for logits)."""
    import onnxruntime as ort

    shape = (1, 3, size, size) if info.layout == "NCHW" else (1, size, size, 3)
    sample = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    before = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"])
    (raw,) = before.run(None, {info.input_name: sample})
    (served,) = after.run(None, {info.input_name: sample})
    expected = raw
    if outputs == "logits":
        shifted = np.exp(raw - raw.max(axis=-1, keepdims=True))
        expected = shifted / shifted.sum(axis=-1, keepdims=True)
    if not np.allclose(served, expected, atol=1e-5):
        raise OnnxImportError("the repository's copy does not reproduce the original's scores")
    if outputs == "probabilities" and not np.allclose(served.sum(axis=-1), 1.0, atol=1e-3):
        raise OnnxImportError(
            "outputs were declared probabilities but do not sum to 1; use --outputs logits"
        )


def import_onnx(
    onnx_path: Path,
    labels_path: Path,
    name: str,
    preprocess: PreprocessSpec,
    outputs: OutputKind,
    repository: Path,
    options: ServingOptions,
) -> WrittenVersion:
    """Write an existing ONNX classifier into the repository, beside any other models.

    Raises:
        OnnxImportError: the file, the labels or the flags do not fit together.
        OSError: the repository cannot be written; earlier versions stay intact.
    """
    from dataclasses import replace

    info = inspect_onnx(onnx_path)
    labels = [line for line in labels_path.read_text(encoding="utf-8").splitlines() if line]
    if len(labels) != info.num_classes:
        raise OnnxImportError(
            f"{labels_path.name} has {len(labels)} labels but the model outputs "
            f"{info.num_classes} classes"
        )
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
    crop = preprocess.crop_px
    input_dims = [3, crop, crop] if info.layout == "NCHW" else [crop, crop, 3]
    with tempfile.TemporaryDirectory(prefix="tvision-import-") as work_dir:
        prepared = Path(work_dir) / "model.onnx"
        served_output = prepare_for_serving(onnx_path, prepared, outputs)
        _check_prepared(onnx_path, prepared, info, outputs, crop)
        source = ClassifierSource(
            onnx_path=prepared,
            onnx_input=info.input_name,
            onnx_output=served_output,
            input_dims=input_dims,
            labels=labels,
            preprocess_spec_json=preprocess.to_json(),
        )
        return write_version(repository, name, source, options)
