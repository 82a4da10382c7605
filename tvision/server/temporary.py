"""A server for one job that nothing else shares: a benchmark's, a load test's, a test's.

It is killed when the job ends (``TritonServer.stop(graceful=False)``): nothing is in flight
then and nothing of it is kept, and a graceful stop waits on the python backend's unload
(it sleeps 1 s for each model instance). The cleanup is the same either
way: no process, shared-memory region or work directory is left
(``tests/e2e/test_faults.py`` checks both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tvision.server.launcher import TritonServer
from tvision.server.ports import ServerPorts


@contextlib.contextmanager
def temporary_server(
    repository: Path | str, ports: ServerPorts | None = None, **options: Any
) -> Iterator[TritonServer]:
    """A started ``TritonServer`` on ``ports`` (free ones by default), killed on exit.
    ``options`` are ``TritonServer``'s own."""
    server = TritonServer(repository, ports or ServerPorts.free(), **options).start()
    try:
        yield server
    finally:
        server.stop(graceful=False)
