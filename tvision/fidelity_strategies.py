"""The preprocessing paths ``tvision fidelity`` holds to the reference, by name: each python
decode strategy, exactly as the server runs it, and the DALI path's CPU twin."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tvision_export import contract

# The row of the DALI path's CPU twin (``tvision.dali_twin``), beside the python strategies.
DALI_TWIN = "dali-cpu-twin"

# One photo -> (a batch of one model input, CPU seconds it cost).
Preprocess = Callable[[bytes], tuple[np.ndarray, float]]


def strategy(name: str, spec_dict: dict[str, Any]) -> Preprocess:
    """A python decode strategy, exactly as the server runs it (its cost: decode, resize
    and crop), or ``DALI_TWIN``, the DALI path's CPU twin (its cost: the intake's check
    and the whole pipeline, normalisation included, on all of DALI's threads).

    Raises:
        ValueError: an unknown strategy, or the DALI twin without DALI installed.
    """
    if name == DALI_TWIN:
        from tvision.dali_twin import DaliTwin, DaliUnavailable

        try:
            twin = DaliTwin(spec_dict, max_batch_size=1, max_image_pixels=10**9,
                            max_image_bytes=10**9)  # fmt: skip
        except DaliUnavailable as exc:
            raise ValueError(str(exc)) from exc

        def dali(data: bytes) -> tuple[np.ndarray, float]:
            started = time.process_time()
            pixels = twin.preprocess_one(data)
            return pixels[None], time.process_time() - started

        return dali

    from tvision_export.options import ServingOptions
    from tvision_export.triton_models.preprocess import ImagePreprocessor

    strict = ServingOptions().strict_jpeg  # the JPEG decode the server runs by default
    preprocessor = ImagePreprocessor(spec_dict, 10**9, 10**9, decode=name, strict_jpeg=strict)

    def python(data: bytes) -> tuple[np.ndarray, float]:
        started = time.process_time()
        crop = preprocessor.decode(data)
        spent = time.process_time() - started
        return preprocessor.normalise([crop]), spent

    return python


def default_strategies() -> tuple[str, ...]:
    """Every python decode strategy, and the DALI twin where DALI is installed."""
    from tvision.dali_twin import dali_available

    return tuple(contract.DECODE_HEADROOM) + ((DALI_TWIN,) if dali_available() else ())
