"""What Triton's log says that its APIs do not: a model that failed to load during start,
and, while it shuts down, how many models are still live.

Triton 2.51 writes both as lines of its own (``model_lifecycle.cc``, ``server.cc``); the
launcher reads them from the log file it gave the server.
"""

from __future__ import annotations

import re

# E... model_lifecycle.cc:642] "failed to load 'NAME' version 1: REASON"
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.*?)\"?$", re.MULTILINE)
_LIVE_MODELS = re.compile(r"Found (\d+) live models and 0 in-flight")


def first_load_failure(log: str) -> str | None:
    """The first model that failed to load, as "'NAME': REASON", or None.

    Triton exits once its start has failed (``--exit-on-error``, the default), but only after
    unloading every model that did load, about 1 s per python-backend instance: the
    launcher reports the failure when it is logged instead of waiting for that exit."""
    found = _LOAD_FAILURE.search(log)
    return None if found is None else f"'{found[1]}': {found[2]}"


def only_stale_models_left(log: str, stale: int) -> bool:
    """While shutting down, Triton logs each second how many models are still live. An
    instance whose stub died never finishes unloading, so a server whose models were healed
    would sit out the whole exit timeout and exit 1. Once Triton is unloading (no inference
    is in flight) and no more models are live than ``stale`` instances were replaced, only
    those are left, and there is nothing to wait for."""
    lines = log.splitlines()
    if not any("unloading models" in line for line in lines):
        return False
    for line in reversed(lines[-5:]):
        found = _LIVE_MODELS.search(line)
        if found:
            return int(found.group(1)) <= stale
    return False
