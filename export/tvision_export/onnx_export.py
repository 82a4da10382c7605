"""PyTorch -> ONNX export, and validation of ONNX Runtime against PyTorch.

The exported graph always ends in probabilities: a model whose spec says it outputs logits
gets a softmax appended before export, so that both targets serve the same scores.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tvision_export.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "probabilities"


class ExportValidationError(Exception):
    """ONNX Runtime disagrees with PyTorch beyond the spec's tolerance.

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
    torch_top1: list[int]
    onnx_top1: list[int]


@dataclass(frozen=True)
class ValidationReport:
    atol: float
    checks: list[ValidationCheck] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((check.max_abs_diff for check in self.checks), default=0.0)


def build_probability_module(spec: ModelSpec) -> torch.nn.Module:
    """The spec's model, with a softmax appended when it outputs logits, in eval mode."""
    import torch

    model = spec.build_model()
    if not spec.outputs_probabilities:
        model = torch.nn.Sequential(model, torch.nn.Softmax(dim=-1))
    # eval() on the wrapper: torch.onnx.export restores the wrapper's mode afterwards,
    # and a wrapper left in training mode would silently switch the model to training.
    return model.eval()


def export_onnx(spec: ModelSpec, module: torch.nn.Module, onnx_path: Path) -> None:
    """Export ``module`` to ``onnx_path`` with a dynamic batch axis, and check the file.

    Raises:
        onnx.checker.ValidationError: the written file is not a valid ONNX model.
    """
    import onnx
    import torch

    example = torch.zeros(1, 3, spec.input_size_px, spec.input_size_px)
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
            input_names=[ONNX_INPUT_NAME],
            output_names=[ONNX_OUTPUT_NAME],
            dynamic_axes={ONNX_INPUT_NAME: {0: "batch"}, ONNX_OUTPUT_NAME: {0: "batch"}},
            opset_version=spec.opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(onnx_path), full_check=True)


def validate_onnx(
    spec: ModelSpec,
    module: torch.nn.Module,
    onnx_path: Path,
    inputs: dict[str, np.ndarray],
) -> ValidationReport:
    """Run ONNX Runtime and PyTorch on the same inputs and compare them.

    Output names, shapes and values (``allclose`` with the spec's ``atol``) are checked, and
    every failure is gathered before raising.

    Raises:
        ExportValidationError: any check failed; the message lists them all.
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    output_names = [output.name for output in session.get_outputs()]
    failures: list[str] = []
    if output_names != [ONNX_OUTPUT_NAME]:
        failures.append(f"outputs are {output_names}, expected [{ONNX_OUTPUT_NAME!r}]")
    atol = spec.validation.atol
    checks: list[ValidationCheck] = []
    for name, batch in inputs.items():
        (onnx_out,) = session.run(None, {ONNX_INPUT_NAME: batch})
        with torch.no_grad():
            torch_out = module(torch.from_numpy(batch)).numpy()
        if onnx_out.shape != torch_out.shape:
            failures.append(f"{name}: shape {onnx_out.shape} != torch {torch_out.shape}")
            continue
        diff = float(np.max(np.abs(onnx_out - torch_out)))
        check = ValidationCheck(
            input_name=name,
            shape=tuple(onnx_out.shape),
            max_abs_diff=diff,
            torch_top1=torch_out.argmax(axis=1).tolist(),
            onnx_top1=onnx_out.argmax(axis=1).tolist(),
        )
        checks.append(check)
        if not np.allclose(onnx_out, torch_out, rtol=0.0, atol=atol):
            failures.append(f"{name}: max |onnx - torch| = {diff:.3g} exceeds atol {atol:g}")
        if check.torch_top1 != check.onnx_top1:
            failures.append(f"{name}: top-1 {check.onnx_top1} != torch {check.torch_top1}")
    if failures:
        raise ExportValidationError(failures)
    return ValidationReport(atol=atol, checks=checks)
