"""Triton python-backend model: the ensemble's first step, one request at a time.

The python backend reads the input tensors of a whole batch before ``execute`` runs, and a
malformed BYTES tensor (a length prefix past the end of its data) fails every request in
that batch. This model has no dynamic batching, so Triton hands it each request alone:
a malformed tensor fails only its own request, and every request that passes goes on,
unchanged, to the batched preprocessing model.
"""

from __future__ import annotations

from typing import Any

from . import contract  # the copy beside this file in a repository (see __init__.py)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # Triton's, only inside Triton

        self.pb_utils = pb_utils

    def execute(self, requests: list[Any]) -> list[Any]:
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            encoded = pb_utils.get_input_tensor_by_name(request, contract.ENSEMBLE_INPUT)
            tensor = pb_utils.Tensor(contract.INTAKE_OUTPUT, encoded.as_numpy())
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
