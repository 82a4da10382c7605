"""Triton python-backend model: runs ``model.onnx`` with ONNX Runtime on the CPU.

This is the ``cpu`` target's classifier. The embedded server has no onnxruntime backend, so
ONNX Runtime runs inside the python backend instead; the ``gpu`` target uses Triton's own
``onnxruntime_onnx`` platform on the same ``model.onnx``. All the requests Triton's dynamic
batcher hands to ``execute`` run as one ONNX Runtime call, and its predictions are counted
in the prediction metrics (``prediction_metrics.py``) before the responses go out.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort

# The copies beside this file in a repository (see __init__.py).
from . import contract, prediction_metrics


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # Triton's, only inside Triton

        self.pb_utils = pb_utils
        model_config = json.loads(args["model_config"])
        parameters = contract.parameters_of(model_config)
        options = ort.SessionOptions()
        # Threads are set deliberately: the preprocessing instances share the same cores.
        options.intra_op_num_threads = int(parameters[contract.PARAM_INTRA_OP_THREADS])
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores the preprocessing instances need between batches.
        spinning = contract.decode_bool(parameters[contract.PARAM_ALLOW_SPINNING])
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model_path = os.path.join(
            args["model_repository"], args["model_version"], contract.MODEL_ONNX_FILE
        )
        self.session = ort.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = model_config["input"][0]["name"]
        self.output_name = model_config["output"][0]["name"]
        # Triton runs each warmup sample on each instance before the model is ready, one
        # execute per sample: those are not predictions, so they are not counted.
        self.warmup_executions_left = sum(
            max(1, int(sample.get("count", 1))) for sample in model_config.get("model_warmup", [])
        )
        self.metrics = None
        if contract.decode_bool(parameters[contract.PARAM_PREDICTION_METRICS]):
            self.metrics = _prediction_metrics(pb_utils, args, parameters)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb_utils = self.pb_utils
        inputs = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            for request in requests
        ]
        batch = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
        (scores,) = self.session.run([self.output_name], {self.input_name: batch})
        if self.warmup_executions_left:
            self.warmup_executions_left -= 1
        elif self.metrics is not None:
            self.metrics.observe(scores)
        responses = []
        start = 0
        for array in inputs:
            count = array.shape[0]
            tensor = pb_utils.Tensor(self.output_name, scores[start : start + count])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += count
        return responses

    def finalize(self) -> None:
        if self.metrics is not None:
            self.metrics.close()


def _prediction_metrics(
    pb_utils: Any, args: dict[str, str], parameters: dict[str, str]
) -> prediction_metrics.PredictionMetrics:
    """The instance's prediction metrics, labelled by the ensemble's name and version."""
    labels_path = os.path.join(args["model_repository"], contract.LABELS_FILE)
    with open(labels_path, encoding="utf-8") as labels_file:
        labels = [line.rstrip("\n") for line in labels_file if line.strip()]
    return prediction_metrics.PredictionMetrics(
        pb_utils,
        model=args["model_name"].removesuffix(contract.CLASSIFIER_SUFFIX),
        version=args["model_version"],
        labels=labels,
        parameters=parameters,
    )
