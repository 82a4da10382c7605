"""The ``tritonserver`` process: a local server's lifecycle, from start to stop.

The launcher prepares a backend directory with the stub for the running interpreter
(``binary``), starts the server on loopback behind the edge (``tvision.edge``), waits for
readiness, starts the stub watchdog (``watchdog``), and on stop terminates the whole process
group so that no python-backend stub outlives the server, then removes what the server left
(``cleanup``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from tvision.edge import Edge, EdgeError, EdgeLimits, EdgePorts, EdgeTLS
from tvision.readiness import shared_memory_problem
from tvision.server import cleanup
from tvision.server.binary import (
    EXEC_WRAPPER,
    prepare_backend_dir,
    server_environment,
    tritonserver_binary,
    wrapped,
)
from tvision.server.errors import ServerError
from tvision.server.log import first_load_failure, only_stale_models_left
from tvision.server.ports import ServerPorts, free_ports, refuse_ports_in_use
from tvision.server.repository import as_served, edge_limits_for
from tvision.server.security import (
    ADMIN_KEY_HEADER,
    GRPC_ADMIN_KEY_HEADER,
    admin_key_for,
    restricted_api_args,
    triton_tls_args,
)
from tvision.server.watchdog import Heal, StubWatchdog

# gRPC keepalive, the server's side: the SDK pings every few seconds to notice a replica cut
# off in seconds, not after the 20 s TCP user timeout, which Triton's default policy (a ping
# every 5 minutes at most, 2 strikes) would punish. The server pings, and drops the silent.
GRPC_KEEPALIVE_ARGS = (
    "--grpc-keepalive-time=10000",
    "--grpc-keepalive-timeout=5000",
    "--grpc-keepalive-permit-without-calls=true",
    "--grpc-http2-max-pings-without-data=0",
    "--grpc-http2-min-recv-ping-interval-without-data=1000",
    "--grpc-http2-max-ping-strikes=0",
)


class TritonServer:
    """A ``tritonserver`` process on loopback. Use as a context manager, or start/stop.

    Example::

        with TritonServer(Path("model_repository"), ServerPorts.free()) as server:
            print(server.grpc_url)
    """

    def __init__(
        self,
        repository: Path | str,
        ports: ServerPorts | None = None,
        *,
        address: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        exit_timeout_s: int = 20,
        log_path: Path | None = None,
        admin_key: str | None = None,
        open_admin_apis: bool = False,
        serving_args: Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
        edge: EdgeLimits | Literal["auto"] | None = "auto",
        tls: EdgeTLS | None = None,
    ) -> None:
        """Closed by default: ADMIN_APIS answer only requests carrying ``admin_key``, or,
        without one, a key made for this start and known only to this object
        (``admin_headers``). ``open_admin_apis=True`` leaves them open, on loopback only.

        ``serving_args``, when given, replace the launcher's own serving flags (repository,
        model control, exit timeout, the admin restriction): the Kubernetes conformance test
        runs the rendered Deployment's flags, which restrict the APIs themselves, this way.
        Addresses, ports and the python backend's placement on this machine are always the
        launcher's. ``environment`` is added to this process's environment for the server.

        ``edge``: nginx in front of Triton (tvision/edge.py) bounds each request's size and
        each connection's pace; "auto" sizes its body limit from the repository's image
        byte limit, None serves Triton directly (unbounded). ``tls`` (gRPC) is terminated
        at the edge, or, without one, by Triton itself.

        Raises:
            ServerError: open admin APIs on an address other machines reach, or a key given
                together with ``open_admin_apis``, or a key that is too short.
        """
        self.admin_key = admin_key_for(address, admin_key, open_admin_apis, serving_args is None)
        # A local directory, or a remote repository as Triton spells it (s3://...).
        self.repository = as_served(repository)
        self.remote = isinstance(self.repository, str)
        self.ports = ports or ServerPorts()
        self.address = address
        self.extra_args = list(extra_args)
        self.serving_args = None if serving_args is None else list(serving_args)
        self.environment = dict(environment or {})
        self.exit_timeout_s = exit_timeout_s
        self.edge_limits = edge_limits_for(self.repository) if edge == "auto" else edge
        self.tls = tls
        self._log_path = log_path
        self._keep_log = log_path is not None
        self._init_running_state()

    def _init_running_state(self) -> None:
        """What a start sets and a stop clears: the processes, their ports and files."""
        self.edge: Edge | None = None
        # Where Triton itself listens: behind the edge, loopback ports chosen at start.
        self.triton_ports = self.ports
        self._work_dir: Path | None = None
        self._log_handle: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.shm_prefix = ""
        self.shm_plan_bytes = 0  # tvision.sizing's worst case, once started with an edge
        self.watchdog: StubWatchdog | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self._host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self._host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._host}:{self.ports.metrics}/metrics"

    @property
    def triton_http_url(self) -> str:
        """Triton's own HTTP port, behind the edge: the launcher's own calls go here."""
        host = "127.0.0.1" if self.edge_limits is not None else self._host
        return f"http://{host}:{self.triton_ports.http}"

    @property
    def _host(self) -> str:
        """Where to connect: a wildcard address is reached on loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.address, self.address)

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise ServerError("the server has not been started")
        return self._log_path

    @property
    def admin_headers(self) -> dict[str, str]:
        """The HTTP header that admits admin API calls (empty when unrestricted)."""
        return {} if self.admin_key is None else {ADMIN_KEY_HEADER: self.admin_key}

    @property
    def admin_grpc_headers(self) -> dict[str, str]:
        """The gRPC metadata (tritonclient ``headers=``) that admits admin calls."""
        return {} if self.admin_key is None else {GRPC_ADMIN_KEY_HEADER: self.admin_key}

    def command(self, backend_dir: Path) -> list[str]:
        serving = self.serving_args
        if serving is None:
            serving = [
                f"--model-repository={self.repository}",
                f"--exit-timeout-secs={self.exit_timeout_s}",
                # Explicit control lets the watchdog reload a model whose stub died.
                "--model-control-mode=explicit",
                "--load-model=*",
                # A dead stub must not hold an unload (and the server's exit) for 30 s.
                "--backend-config=python,stub-timeout-seconds=5",
            ]
        restricted = [] if self.admin_key is None else restricted_api_args(self.admin_key)
        # Behind the edge only nginx reaches Triton's gRPC and HTTP ports: loopback.
        behind = "127.0.0.1" if self.edge_limits is not None else self.address
        tls = [] if self.tls is None or self.edge_limits is not None else triton_tls_args(self.tls)
        return [
            str(tritonserver_binary()),
            *serving,
            f"--backend-directory={backend_dir}",
            f"--grpc-address={behind}",
            f"--grpc-port={self.triton_ports.grpc}",
            f"--http-address={behind}",
            f"--http-port={self.triton_ports.http}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.ports.metrics}",
            "--metrics-config=summary_latencies=true",  # p50/p99 per model, for the dashboard
            "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *GRPC_KEEPALIVE_ARGS,
            *restricted,
            *tls,
            *self.extra_args,
        ]

    def start(
        self, ready_timeout_s: float = 240.0, heal: bool = True, fail_fast: bool = True
    ) -> TritonServer:
        """Start the server and block until ``/v2/health/ready`` answers 200. A model that
        fails to load is reported at once (``fail_fast``), not when Triton exits for it.

        The server gets SIGTERM if the thread that started it exits, so start it from a
        thread that lives as long as the server (the main thread, usually).

        Raises:
            ServerError: the repository is missing, the server exited, or it was not ready
                within ``ready_timeout_s``; the message holds the end of the server log.
        """
        if self.serving_args is None and not self.remote and not Path(self.repository).is_dir():
            raise ServerError(
                f"model repository {self.repository} does not exist; run 'tvision export' first"
            )
        refuse_ports_in_use(self.address, self.ports)
        cleanup.remove_stale_shm_regions()
        cleanup.remove_stale_work_dirs()
        self.shm_prefix = cleanup.new_shm_prefix()
        self._work_dir = cleanup.new_work_dir()
        self._check_shared_memory()
        if self.edge_limits is not None:
            grpc, http = free_ports(2)
            self.triton_ports = ServerPorts(grpc, http, self.ports.metrics)
        backend_dir = prepare_backend_dir(self._work_dir / "backends")
        if self._log_path is None:
            self._log_path = self._work_dir / "tritonserver.log"
        log_handle = self._log_path.open("wb")
        self._log_handle = log_handle
        self.process = subprocess.Popen(
            wrapped(self.command(backend_dir)),
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=server_environment({**os.environ, **self.environment}),
            start_new_session=True,  # its own process group: stop() reaches every stub
        )
        try:
            if self.edge_limits is not None:
                self._start_edge(self.edge_limits, self._work_dir / "edge")
            self._wait_until_ready(ready_timeout_s, fail_fast)
            if heal:
                self.watchdog = StubWatchdog(self)
                self.watchdog.start()
        except BaseException:
            self.stop(graceful=False)  # never ready: nothing is in flight
            raise
        return self

    def _start_edge(self, limits: EdgeLimits, work_dir: Path) -> None:
        """nginx on the public ports, in front of Triton's loopback ones."""
        edge_ports = EdgePorts(
            grpc=self.ports.grpc, http=self.ports.http,
            triton_grpc=self.triton_ports.grpc, triton_http=self.triton_ports.http,
        )  # fmt: skip
        self.edge = Edge(limits, edge_ports, work_dir, address=self.address, tls=self.tls)
        try:
            self.edge.start(EXEC_WRAPPER)
        except EdgeError as exc:
            raise ServerError(str(exc)) from exc

    def _check_shared_memory(self) -> None:
        """Warn when /dev/shm cannot hold the python backend's worst case (tvision.sizing):
        a burst of the largest images would then fail instead of being served or shed."""
        import warnings

        from tvision import sizing

        if self.edge_limits is None or not isinstance(self.repository, Path):
            return
        needed = sizing.repository_shared_memory_bytes(
            self.repository, self.edge_limits.max_request_bytes
        )
        self.shm_plan_bytes = needed
        available = sizing.dev_shm_bytes()
        if available is not None and available < needed:
            warnings.warn(
                f"/dev/shm holds {available / 2**30:.1f} GiB, and the python backend may "
                f"need {needed / 2**30:.1f} GiB for a burst of the largest images this "
                "repository admits: enlarge it, or lower --max-image-bytes",
                stacklevel=3,
            )

    def healthy(self) -> bool:
        """Ready, every model has all its python-backend stubs alive, and /dev/shm can hold
        the backend's worst case (tvision/readiness.py, as the pod's readiness probe asks)."""
        if self.process is None or self.process.poll() is not None or not self.is_ready():
            return False
        if self.edge is not None and not self.edge.running():
            return False  # clients reach Triton only through the edge
        if self.shm_plan_bytes and shared_memory_problem(self.shm_plan_bytes, self.shm_prefix):
            return False
        return self.watchdog is None or self.watchdog.healthy

    def is_ready(self) -> bool:
        try:
            url = f"{self.triton_http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_until_ready(self, timeout_s: float, fail_fast: bool) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            failed = first_load_failure(self.log_tail(400)) if fail_fast else None
            if failed:
                raise ServerError(f"tritonserver could not load model {failed}")
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} before it was "
                    f"ready:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float | None = None, *, graceful: bool = True) -> int | None:
        """Stop gracefully (SIGTERM), then kill what is left of the process group; or kill at
        once (``graceful=False``, nothing in flight): the python backend sleeps 1 s for each
        instance it unloads. Returns the server's exit code, or None if it never started."""
        process = self.process
        if process is None:
            return None
        healed: list[Heal] = []
        if self.watchdog is not None:
            self.watchdog.stop()
            healed = self.watchdog.heals
            self.watchdog = None
        wait_s = timeout_s if timeout_s is not None else self.exit_timeout_s + 10
        stale_instances = len([heal for heal in healed if heal.recovered_s is not None])
        # The door closes first: nginx's graceful stop lets the requests in flight finish
        # and then closes its idle upstream connections, which Triton would otherwise wait
        # on for the whole exit timeout (and then exit 1) once any request had passed.
        if self.edge is not None:
            self.edge.stop(timeout_s=wait_s if graceful else 0)
            self.edge = None
        if process.poll() is None and graceful:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + wait_s
            while process.poll() is None and time.monotonic() < deadline:
                if stale_instances and only_stale_models_left(self.log_tail(200), stale_instances):
                    break  # nothing left to drain; see tvision/server/log.py
                time.sleep(0.2)
        if process.poll() is None:
            process.kill()
            process.wait()
        # Stubs normally exit with the server; any that did not are in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        cleanup.remove_regions(self.shm_prefix)
        if self._work_dir is not None:
            # The log lives here unless the caller chose its path; read it before stop().
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            if not self._keep_log:
                self._log_path = None
        self.process = None
        return process.returncode

    def __enter__(self) -> TritonServer:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
