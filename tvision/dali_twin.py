"""The DALI path's CPU twin: the served ``dali.py`` pipeline, built with CPU operators.

``--preprocess dali`` serves ``preprocess("gpu")`` from the repository's ``dali.py``
(nvJPEG decode, GPU resize); this builds ``preprocess("cpu")`` from the same file, so
``tvision fidelity`` and the tests can hold the definition to the model's reference
preprocessing on a machine without a GPU. The CPU decoder is libjpeg-turbo; nvJPEG may
round differently, which ``tvision gpu-check`` measures on a GPU.

The twin runs what the served ensemble runs: the intake's checks and geometry
(``dali_intake.DaliIntake``, one image at a time), then one DALI batch of the images that
passed. DALI is an optional extra (``pip install 'tvision[dali]'``).
"""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tvision_export import contract
from tvision_export.dali_model import render_dali_py
from tvision_export.triton_models.dali_intake import DaliIntake, ImageRejected
from tvision_export.triton_models.preprocess import ImagePreprocessor

INSTALL_HINT = "pip install 'tvision[dali]' (nvidia-dali-cuda120, a 424 MB wheel)"


class DaliUnavailable(RuntimeError):
    """DALI is not installed."""


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def load_definition(source: str, name: str = "dali_py") -> types.ModuleType:
    """A ``dali.py`` file's text as a module (its ``@autoserialize`` pipeline is only
    defined, not built, so this needs no GPU).

    Raises:
        DaliUnavailable: DALI is not installed.
    """
    if not dali_available():
        raise DaliUnavailable(f"the DALI CPU twin needs DALI: {INSTALL_HINT}")
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)  # the exporter's own rendered file
    return module


class DaliTwin:
    """Preprocess encoded images as the DALI path serves them, on the CPU."""

    def __init__(
        self,
        spec: dict[str, Any],
        max_batch_size: int = 64,
        max_image_pixels: int = 40_000_000,
        max_image_bytes: int = 20 * 1024 * 1024,
        max_request_pixels: int | None = None,
        dali_py: str | None = None,
        num_threads: int = 2,
        device: str = "cpu",
    ) -> None:
        """``dali_py``: the text of a repository's ``dali.py``; rendered from ``spec`` when
        not given. ``device="gpu"`` builds the served pipeline itself (nvJPEG, GPU 0), which
        ``tvision gpu-check`` measures on a GPU node; "cpu" is the twin.

        Raises:
            DaliUnavailable: DALI is not installed.
        """
        import nvidia.dali as dali

        self.definition = load_definition(dali_py or render_dali_py(spec, max_batch_size))
        self.max_batch_size = max_batch_size
        self.intake = DaliIntake(
            ImagePreprocessor(
                spec, max_image_pixels, max_image_bytes,
                max_request_pixels=max_request_pixels, strict_jpeg=True,
            )
        )  # fmt: skip

        def definition() -> Any:
            return self.definition.preprocess(device)

        self.pipeline = dali.pipeline_def(
            definition, batch_size=max_batch_size, num_threads=num_threads,
            device_id=0 if device == "gpu" else None, prefetch_queue_depth=1,
        )()  # fmt: skip
        self.pipeline.build()

    @classmethod
    def from_repository(cls, repository: Path, model: str) -> DaliTwin:
        """The twin of a repository's DALI path: its ``dali.py`` and its intake's limits.

        Raises:
            FileNotFoundError: the model was not exported with ``--preprocess dali``.
            DaliUnavailable: DALI is not installed.
        """
        from tvision_export import configs
        from tvision_export.repository import ModelNames

        names = ModelNames.for_model(model)
        version_dirs = sorted(
            (path for path in (repository / names.preprocess).iterdir() if path.name.isdigit()),
            key=lambda path: int(path.name),
        )
        dali_py = version_dirs[-1] / contract.DALI_PY_FILE
        if not dali_py.is_file():
            raise FileNotFoundError(f"{dali_py} is missing: export with --preprocess dali")
        config = configs.parse((repository / names.intake / contract.CONFIG_FILE).read_text())
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        return cls(
            json.loads(parameters[contract.PARAM_PREPROCESS_SPEC]),
            max_batch_size=config.max_batch_size,
            max_image_pixels=int(parameters[contract.PARAM_MAX_IMAGE_PIXELS]),
            max_image_bytes=int(parameters[contract.PARAM_MAX_IMAGE_BYTES]),
            max_request_pixels=int(parameters[contract.PARAM_MAX_REQUEST_PIXELS]),
            dali_py=dali_py.read_text(encoding="utf-8"),
        )

    def run_batch(
        self, encoded: Sequence[np.ndarray], upright: Sequence[np.ndarray],
        sizes: Sequence[np.ndarray], positions: Sequence[np.ndarray],
    ) -> list[np.ndarray]:  # fmt: skip
        """One DALI batch, exactly as the DALI model receives it (no intake checks):
        the pipeline's float32 output per image.

        Raises:
            RuntimeError: DALI failed the batch (a damaged image fails all of it).
        """
        self.pipeline.feed_input(contract.DALI_ENCODED, list(encoded))
        self.pipeline.feed_input(contract.DALI_UPRIGHT, list(upright))
        self.pipeline.feed_input(contract.DALI_SIZE, list(sizes))
        self.pipeline.feed_input(contract.DALI_CROP_POSITION, list(positions))
        (output,) = self.pipeline.run()
        if hasattr(output, "as_cpu"):  # the GPU pipeline's output is in GPU memory
            output = output.as_cpu()
        return [np.array(sample) for sample in output]

    def preprocess(self, requests: Sequence[Sequence[bytes]]) -> list[np.ndarray | str]:
        """Several requests' images, as one DALI batch: per request, its float32 pixels
        (N, ...) or the message of the error it would get.

        Each request goes through the intake alone, as in the served ensemble; the images
        of all the requests that pass make one batch, in chunks of the model's
        ``max_batch_size``.
        """
        outcomes: list[tuple[np.ndarray, ...] | str] = []
        for request in requests:
            try:
                outcomes.append(self.intake.batch(request))
            except ImageRejected as exc:
                outcomes.append(str(exc))
        passed = [outcome for outcome in outcomes if not isinstance(outcome, str)]
        rows = [tuple(tensor[row] for tensor in tensors) for tensors in passed
                for row in range(len(tensors[0]))]  # fmt: skip
        pixels: list[np.ndarray] = []
        for start in range(0, len(rows), self.max_batch_size):
            chunk = rows[start : start + self.max_batch_size]
            pixels += self.run_batch(*zip(*chunk, strict=True))
        results: list[np.ndarray | str] = []
        taken = 0
        for outcome in outcomes:
            if isinstance(outcome, str):
                results.append(outcome)
                continue
            count = len(outcome[0])
            results.append(np.stack(pixels[taken : taken + count]))
            taken += count
        return results

    def preprocess_one(self, data: bytes) -> np.ndarray:
        """One image -> float32 pixels (no batch axis).

        Raises:
            ImageRejected: the intake refuses it.
        """
        (result,) = self.preprocess([[data]])
        if isinstance(result, str):
            raise ImageRejected(result)
        return result[0]
