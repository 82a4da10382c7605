"""Before any load is sent: the images, the server and the model are checked once, and a
run that cannot work ends at once with one ``error: ...`` line and exit 2 (could not run),
not with a traceback per user and the whole ``-t`` of failing requests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner

from tvision_client import NO_RETRY, Client, ClientError, ModelNotFoundError
from tvision_loadtest import gate
from tvision_loadtest.images import image_paths

# How long the server may take to answer the model's metadata: a server that is up answers
# in milliseconds; a host that drops packets is given up on after this.
CHECK_TIMEOUT_S = 5.0
# The SDK user's target when Locust is given no --host.
DEFAULT_HOST = "127.0.0.1:8001"


def problem(options: Any, host: str, *, worker: bool = False) -> str | None:
    """What stops this run before it starts, as one line, or None.

    A worker checks only what it reads itself (the images); the master or a single
    process also checks the baseline file and asks the server for the model.
    """
    try:
        image_paths(options.images)
    except FileNotFoundError as exc:
        return f"--images: {exc}"
    if worker:
        return None
    if options.baseline:
        try:
            gate.load_baseline(Path(options.baseline))
        except (OSError, ValueError) as exc:
            return f"--baseline {options.baseline}: {exc}"
    target = host or DEFAULT_HOST
    client = Client(target, model=options.model, timeout_s=CHECK_TIMEOUT_S, retry=NO_RETRY)
    try:
        client.model_info(timeout_s=CHECK_TIMEOUT_S)
    except ModelNotFoundError as exc:
        return f"--model {options.model}: {exc}"
    except ClientError as exc:
        return f"--host {target}: {exc}"
    finally:
        client.close()
    return None


def on_init(environment: Environment, **_kwargs: Any) -> None:
    """Locust's ``init`` hook (after the options are parsed, before any user starts)."""
    options = environment.parsed_options
    if options is None:
        return
    worker = isinstance(environment.runner, WorkerRunner)
    found = problem(options, environment.host or "", worker=worker)
    if found:
        print(f"error: {found}", file=sys.stderr, flush=True)
        # SystemExit passes through Locust's event hook (it catches Exception), so the
        # process ends here, before the run starts; exit 2 is "could not run".
        sys.exit(gate.EXIT_COULD_NOT_RUN)
