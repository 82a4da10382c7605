"""PyTorch -> ONNX export, and the one validation path for every served ONNX classifier.

A served graph always ends in probabilities. A model that outputs logits gets a Softmax
node appended to its ONNX graph by ``append_softmax``, the same way for a spec's export
and for a brought ONNX file, so both targets serve the same scores.

``validate_onnx`` compares the served graph against a reference (PyTorch for an export,
the user's original file for an import) on random inputs and a real photo through the
spec's reference preprocessing, and gathers every failure before raising.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tvision_export import contract
from tvision_export.contract import OutputKind
from tvision_export.reference import reference_preprocess
from tvision_export.spec import ModelSpec, PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

# A callable that maps a batch of model inputs to the probabilities the served graph must give.
Reference = Callable[[np.ndarray], np.ndarray]


class ExportValidationError(Exception):
    """The served ONNX graph disagrees with its reference beyond the tolerance.

    ``failures`` lists every check that failed, not only the first.
    """

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__("ONNX validation failed:\n  " + "\n  ".join(failures))


@dataclass(frozen=True)
class ValidationCheck:
    input_name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    reference_top1: list[int]
    onnx_top1: list[int]


@dataclass(frozen=True)
class ValidationReport:
    atol: float
    checks: list[ValidationCheck] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((check.max_abs_diff for check in self.checks), default=0.0)


# -- output kinds ---------------------------------------------------------------------------


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    result: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return result


def to_probabilities(raw: np.ndarray, kind: OutputKind) -> np.ndarray:
    """What a classifier's raw output means as probabilities, for each output kind."""
    if kind not in contract.OUTPUT_KINDS:
        raise ValueError(f"output kind must be one of {contract.OUTPUT_KINDS}, got {kind!r}")
    return softmax(raw) if kind == "logits" else raw


def append_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn a logits graph into a probabilities graph whose output is ``contract.ONNX_OUTPUT``.

    Raises:
        ValueError: the graph's opset is older than 13 (Softmax over the last axis).
    """
    import onnx

    if not any(
        opset.domain in ("", "ai.onnx") and opset.version >= 13 for opset in model.opset_import
    ):
        raise ValueError("appending a Softmax over the last axis needs ONNX opset 13 or newer")
    logits = model.graph.output[0]
    if logits.name == contract.ONNX_OUTPUT:
        raise ValueError(f"the logits output is already named {contract.ONNX_OUTPUT!r}")
    model.graph.node.append(
        onnx.helper.make_node(
            "Softmax", [logits.name], [contract.ONNX_OUTPUT], axis=-1, name="tvision_softmax"
        )
    )
    served = onnx.helper.make_tensor_value_info(contract.ONNX_OUTPUT, onnx.TensorProto.FLOAT, None)
    served.type.tensor_type.shape.CopyFrom(logits.type.tensor_type.shape)
    del model.graph.output[:]
    model.graph.output.append(served)
    onnx.checker.check_model(model)
    return model


# -- export -------------------------------------------------------------------------------------


def build_module(spec: ModelSpec) -> torch.nn.Module:
    """The spec's model taking input in the spec's layout, raw outputs, in eval mode."""
    import torch

    model = spec.build_model()
    if spec.preprocess.layout == "NHWC":

        class ChannelsLastInput(torch.nn.Module):
            """NHWC in, NCHW to the wrapped model: the export honours the spec's layout."""

            def forward(self, pixels: torch.Tensor) -> torch.Tensor:
                return pixels.permute(0, 3, 1, 2)

        model = torch.nn.Sequential(ChannelsLastInput(), model)
    # eval() on the wrapper: torch.onnx.export restores the wrapper's mode afterwards,
    # and a wrapper left in training mode would silently switch the model to training.
    return model.eval()


def torch_reference(module: torch.nn.Module, outputs: OutputKind) -> Reference:
    """PyTorch's probabilities for a batch, the reference for an exported graph."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            raw = module(torch.from_numpy(batch)).numpy()
        return to_probabilities(raw, outputs)

    return run


def export_onnx(spec: ModelSpec, module: torch.nn.Module, onnx_path: Path) -> None:
    """Export ``module`` with a dynamic batch axis, ending in ``contract.ONNX_OUTPUT``.

    Raises:
        onnx.checker.ValidationError: the written file is not a valid ONNX model.
    """
    import onnx
    import torch

    example = torch.zeros(1, *spec.input_dims)
    raw_output = contract.ONNX_OUTPUT if spec.outputs == "probabilities" else "logits"
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its deprecation and notes Slice folding on every
        # call; neither affects the graph, which validate_onnx checks numerically.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        # The TorchScript-based exporter handles this architecture's static-padding
        # modules directly; a dynamic batch axis is all the serving side needs.
        torch.onnx.export(
            module,
            (example,),
            str(onnx_path),
            input_names=[contract.ONNX_INPUT],
            output_names=[raw_output],
            dynamic_axes={contract.ONNX_INPUT: {0: "batch"}, raw_output: {0: "batch"}},
            opset_version=spec.opset,
            dynamo=False,
        )
    if spec.outputs == "logits":
        onnx.save(append_softmax(onnx.load(str(onnx_path))), str(onnx_path))
    onnx.checker.check_model(str(onnx_path), full_check=True)


# -- validation ---------------------------------------------------------------------------------


def validation_inputs(
    preprocess: PreprocessSpec,
    photo: tuple[str, bytes],
    batch_fixed_at_one: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random inputs (batches of 1 and, where the model batches, 3) and a real photo
    through the spec's reference preprocessing, all in the spec's layout."""
    generator = np.random.default_rng(seed)
    dims = preprocess.input_dims
    photo_name, photo_bytes = photo
    inputs = {"random batch of 1": generator.standard_normal((1, *dims), dtype=np.float32)}
    if not batch_fixed_at_one:
        inputs["random batch of 3"] = generator.standard_normal((3, *dims), dtype=np.float32)
    inputs[f"photo {photo_name}"] = reference_preprocess(photo_bytes, preprocess)[np.newaxis]
    return inputs


def validate_onnx(
    onnx_path: Path,
    input_name: str,
    reference: Reference,
    inputs: dict[str, np.ndarray],
    atol: float,
) -> ValidationReport:
    """Run the served graph and the reference on the same inputs and compare them.

    Output names, shapes, values (``allclose`` with ``atol``), top-1 classes and that the
    scores are probabilities are checked; every failure is gathered before raising.

    Raises:
        ExportValidationError: any check failed; the message lists them all.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    output_names = [output.name for output in session.get_outputs()]
    failures: list[str] = []
    if len(output_names) != 1:
        failures.append(f"outputs are {output_names}, expected exactly one")
    checks: list[ValidationCheck] = []
    for name, batch in inputs.items():
        (served,) = session.run(None, {input_name: batch})
        expected = reference(batch)
        if served.shape != expected.shape:
            failures.append(f"{name}: shape {served.shape} != reference {expected.shape}")
            continue
        diff = float(np.max(np.abs(served - expected)))
        check = ValidationCheck(
            input_name=name,
            shape=tuple(served.shape),
            max_abs_diff=diff,
            reference_top1=expected.argmax(axis=1).tolist(),
            onnx_top1=served.argmax(axis=1).tolist(),
        )
        checks.append(check)
        if not np.allclose(served, expected, rtol=0.0, atol=atol):
            failures.append(f"{name}: max |onnx - reference| = {diff:.3g} exceeds atol {atol:g}")
        if check.reference_top1 != check.onnx_top1:
            failures.append(f"{name}: top-1 {check.onnx_top1} != reference {check.reference_top1}")
        if not np.allclose(served.sum(axis=-1), 1.0, atol=1e-3):
            failures.append(
                f"{name}: served scores do not sum to 1; were logits declared as probabilities?"
            )
    if failures:
        raise ExportValidationError(failures)
    return ValidationReport(atol=atol, checks=checks)
