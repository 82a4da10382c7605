"""The embedded Triton server: the real ``tritonserver`` from the ``nvidia-pytriton`` wheel,
run on this machine, closed by default, behind the edge, watched.

One job per module:

- ``binary``: the binary, its backend directory and environment, the exec wrapper;
- ``launcher``: ``TritonServer``, the process's lifecycle from start to stop;
- ``ports``: ``ServerPorts``, free ports, and who holds a taken one;
- ``repository``: the served repository (local or remote) and the edge limits it implies;
- ``security``: the admin-API key policy and gRPC TLS flags;
- ``cleanup``: shared-memory regions and work directories servers leave;
- ``log``: what Triton's log says that its APIs do not (a failed load, live models);
- ``watchdog``: ``StubWatchdog``, which reloads a model whose python-backend stub died;
- ``temporary``: ``temporary_server``, a server for one job, killed when it ends.

Reliability, measured by the fault suite (``tests/e2e/test_faults.py``), is described in
the module it belongs to (``watchdog``, ``binary``, ``cleanup``). Every name below is
importable from ``tvision.server`` itself.
"""

from __future__ import annotations

from tvision.server.binary import (
    EXEC_WRAPPER,
    prepare_backend_dir,
    server_environment,
    tritonserver_binary,
)
from tvision.server.cleanup import (
    SHM_DIR,
    SHM_PREFIX,
    WORK_DIR_PREFIX,
    process_alive,
    remove_stale_shm_regions,
    remove_stale_work_dirs,
)
from tvision.server.errors import ServerError
from tvision.server.launcher import GRPC_KEEPALIVE_ARGS, TritonServer
from tvision.server.ports import ServerPorts, free_ports
from tvision.server.repository import edge_limits_for, served_repository
from tvision.server.security import (
    ADMIN_APIS,
    ADMIN_KEY_HEADER,
    GRPC_ADMIN_KEY_HEADER,
    MIN_ADMIN_KEY_CHARS,
    is_loopback,
    lockdown_settings,
    new_admin_key,
    restricted_api_args,
    triton_tls_args,
)
from tvision.server.temporary import temporary_server
from tvision.server.watchdog import Heal, StubWatchdog

__all__ = [
    "ADMIN_APIS",
    "ADMIN_KEY_HEADER",
    "EXEC_WRAPPER",
    "GRPC_ADMIN_KEY_HEADER",
    "GRPC_KEEPALIVE_ARGS",
    "MIN_ADMIN_KEY_CHARS",
    "SHM_DIR",
    "SHM_PREFIX",
    "WORK_DIR_PREFIX",
    "Heal",
    "ServerError",
    "ServerPorts",
    "StubWatchdog",
    "TritonServer",
    "edge_limits_for",
    "free_ports",
    "is_loopback",
    "lockdown_settings",
    "new_admin_key",
    "prepare_backend_dir",
    "process_alive",
    "remove_stale_shm_regions",
    "remove_stale_work_dirs",
    "restricted_api_args",
    "served_repository",
    "server_environment",
    "temporary_server",
    "triton_tls_args",
    "tritonserver_binary",
]
