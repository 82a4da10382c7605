"""Runs the real ``tritonserver`` binary that ships in the ``nvidia-pytriton`` wheel.

Only the binary, its libraries and the python backend are used; PyTriton's Python API is
not. The launcher prepares a backend directory with the stub for the running interpreter,
sets the library and executable paths the stub needs, starts the server on loopback, waits
for readiness, and on stop terminates the whole process group so that no python-backend
stub outlives the server.

Reliability, measured by the fault suite (``tests/e2e/test_faults.py``):

- The server runs in explicit model-control mode, and a watchdog thread notices a python
  backend stub that died (Triton 2.51 neither restarts it nor reports it) and reloads its
  model, which starts fresh instances; ``healthy()`` is False from the death until the
  reload is done, and ``tvision serve --health-port`` answers readiness from it.
- The server is started through a small exec wrapper that sets PR_SET_PDEATHSIG, not
  through ``preexec_fn`` (unsafe in a process with threads, such as one running gRPC).
- Each server's python-backend shared-memory regions and temporary directory carry its
  launcher's pid; those of launchers that no longer run (killed, say, by SIGKILL) are
  removed at the next start, and a server's own at its stop.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from tvision.edge import Edge, EdgeError, EdgeLimits, EdgePorts, EdgeTLS

# Run by a fresh interpreter between fork and the server: ask for SIGTERM when the launching
# process dies (even by SIGKILL), so a killed ``tvision serve`` or test run cannot orphan a
# server; give up if the launcher already died; then become the server.
_EXEC_WRAPPER = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "tvision_"
_started = 0  # servers started by this process, for unique shared-memory prefixes


WORK_DIR_PREFIX = "tvision-server-"

# The APIs that change or reveal the server's state. With an admin key they answer only
# requests that carry it (HTTP header ADMIN_KEY_HEADER, gRPC metadata GRPC_ADMIN_KEY_HEADER);
# inference, health, metadata and model config stay open (the SDK reads the model config for
# its limits). Every Kubernetes overlay runs with these; `tvision serve --admin-key-env`
# locally. Model control is "model-repository"; "shared-memory" closes the first step of the
# CVE-2025-23319/23320/23334 chain (registering the python backend's own regions).
ADMIN_APIS = ("model-repository", "shared-memory", "statistics", "trace", "logging")
ADMIN_KEY_HEADER = "tvision-admin-key"
# Triton prefixes a restricted protocol's key this way in gRPC metadata.
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"
# Keys shorter than this are refused: a key is the only wall in front of model control.
MIN_ADMIN_KEY_CHARS = 16

# gRPC keepalive, the server's side: the SDK pings every few seconds so that it notices a
# replica cut off from the network in seconds, not after the 20 s TCP user timeout; Triton's
# default policy (a ping every 5 minutes at most, 2 strikes) would close such a channel.
# The server pings too, and drops a peer that stops answering.
GRPC_KEEPALIVE_ARGS = (
    "--grpc-keepalive-time=10000",
    "--grpc-keepalive-timeout=5000",
    "--grpc-keepalive-permit-without-calls=true",
    "--grpc-http2-max-pings-without-data=0",
    "--grpc-http2-min-recv-ping-interval-without-data=1000",
    "--grpc-http2-max-ping-strikes=0",
)


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses no other machine reaches."""
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def new_admin_key() -> str:
    """A key for one server start, known only to its launcher (and its watchdog)."""
    import secrets

    return secrets.token_urlsafe(32)


def restricted_api_args(admin_key: str) -> list[str]:
    """Triton flags that put ADMIN_APIS behind ``admin_key`` on HTTP and gRPC."""
    apis = ",".join(ADMIN_APIS)
    return [
        f"--http-restricted-api={apis}:{ADMIN_KEY_HEADER}={admin_key}",
        f"--grpc-restricted-protocol={apis}:{ADMIN_KEY_HEADER}={admin_key}",
    ]


def remove_stale_shm_regions() -> list[str]:
    """Remove python-backend regions of servers whose launching process has died."""
    removed = []
    for region in SHM_DIR.glob(f"{SHM_PREFIX}*"):
        owner = region.name[len(SHM_PREFIX) :].split("_", 1)[0]
        if owner.isdigit() and not process_alive(int(owner)):
            with contextlib.suppress(OSError):
                region.unlink()
                removed.append(region.name)
    return removed


def remove_stale_work_dirs() -> list[str]:
    """Remove the temporary directories of launchers that died without stopping (SIGKILL)."""
    removed = []
    for work_dir in Path(tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*"):
        owner = work_dir.name[len(WORK_DIR_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not process_alive(int(owner)):
            shutil.rmtree(work_dir, ignore_errors=True)
            removed.append(work_dir.name)
    return removed


def process_alive(pid: int) -> bool:
    """True while a process with this pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def edge_limits_for(repository: Path | str) -> EdgeLimits:
    """Edge limits whose body limit admits one image at the largest byte limit any model
    in a local ``repository`` has; the default limits for a remote one."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from tvision_export import contract

    if isinstance(repository, str) or not repository.is_dir():
        return EdgeLimits()
    limits = []
    for config_file in repository.glob("*/config.pbtxt"):
        try:
            config = text_format.Parse(config_file.read_text(), model_config_pb2.ModelConfig())
        except (OSError, text_format.ParseError):
            continue  # Triton names a broken config when it loads it
        value = config.parameters.get(contract.PARAM_MAX_IMAGE_BYTES)
        if value is not None and value.string_value.isdigit():
            limits.append(int(value.string_value))
    return EdgeLimits.for_image_bytes(max(limits)) if limits else EdgeLimits()


def triton_tls_args(tls: EdgeTLS) -> list[str]:
    """Triton's own gRPC TLS flags, for a server without the edge."""
    args = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={tls.certificate.resolve()}",
        f"--grpc-server-key={tls.private_key.resolve()}",
    ]
    if tls.client_ca is not None:
        args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={tls.client_ca.resolve()}"]
    return args


def _holder(port: int) -> str:
    """ " by NAME (pid N)" for the process listening on ``port``, when it can be seen."""
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return ""
    for connection in connections:
        listening = connection.status == psutil.CONN_LISTEN
        if listening and connection.laddr and connection.laddr.port == port and connection.pid:
            try:
                name = psutil.Process(connection.pid).name()
            except psutil.Error:
                name = "a process"
            return f" by {name} (pid {connection.pid})"
    return ""


class ServerError(RuntimeError):
    """The server could not be started, or died; the message holds the end of its log."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class ServerPorts:
    """The ports clients use. With the edge (the default), gRPC and HTTP are nginx's, and
    Triton listens on loopback ports of its own behind it; metrics are Triton's own."""

    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls) -> ServerPorts:
        """Three distinct ports that are free on 127.0.0.1 right now."""
        grpc, http, metrics = free_ports(3)
        return cls(grpc=grpc, http=http, metrics=metrics)


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServerError(
            "the embedded Triton server needs the nvidia-pytriton package: "
            "pip install 'nvidia-pytriton==0.7.0'"
        ) from exc
    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    return _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def prepare_backend_dir(destination: Path) -> Path:
    """Copy the python backend and the stub for this interpreter's version into place.

    Raises:
        ServerError: the wheel has no stub for this Python version.
    """
    triton_dir = _pytriton_dir() / "tritonserver"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton_dir / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(
            f"nvidia-pytriton ships no python backend stub for Python {python_version}"
        )
    backend = destination / "python"
    shutil.copytree(triton_dir / "backends" / "python", backend, dirs_exist_ok=True)
    shutil.copy2(stub, backend / "triton_python_backend_stub")
    return destination


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the binary and the python-backend stub need."""
    env = dict(os.environ if base is None else base)
    libs = _pytriton_dir().parent / "nvidia_pytriton.libs"
    python_libdir = sysconfig.get_config_var("LIBDIR") or ""
    library_path = [python_libdir, str(libs)]
    if env.get("LD_LIBRARY_PATH"):
        library_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(part for part in library_path if part)
    # The stub's embedded interpreter finds its site-packages through the python on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


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
        if open_admin_apis and admin_key is not None:
            raise ServerError("an admin key and open admin APIs exclude each other")
        if open_admin_apis and not is_loopback(address):
            raise ServerError(
                f"refusing to serve {address} with the admin APIs open: anyone who can connect "
                "could load code (model control) or touch shared memory; keep them closed"
            )
        if admin_key is not None and len(admin_key) < MIN_ADMIN_KEY_CHARS:
            raise ServerError(f"the admin key must have at least {MIN_ADMIN_KEY_CHARS} characters")
        if admin_key is None and not open_admin_apis and serving_args is None:
            admin_key = new_admin_key()
        # A local directory, or a remote repository as Triton spells it (s3://...).
        self.remote = str(repository).startswith(("s3://", "gs://", "as://"))
        self.repository: Path | str = str(repository) if self.remote else Path(repository).resolve()
        self.ports = ports or ServerPorts()
        self.address = address
        self.extra_args = list(extra_args)
        self.admin_key = admin_key
        self.serving_args = None if serving_args is None else list(serving_args)
        self.environment = dict(environment or {})
        self.exit_timeout_s = exit_timeout_s
        self.edge_limits = edge_limits_for(self.repository) if edge == "auto" else edge
        self.tls = tls
        self.edge: Edge | None = None
        # Where Triton itself listens: behind the edge, loopback ports chosen at start.
        self.triton_ports = self.ports
        self._work_dir: Path | None = None
        self._log_path = log_path
        self._log_handle: IO[bytes] | None = None
        self._keep_log = log_path is not None
        self.process: subprocess.Popen[bytes] | None = None
        self.shm_prefix = ""
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
            "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *GRPC_KEEPALIVE_ARGS,
            *restricted,
            *tls,
            *self.extra_args,
        ]

    def start(self, ready_timeout_s: float = 240.0, heal: bool = True) -> TritonServer:
        """Start the server and block until ``/v2/health/ready`` answers 200.

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
        self._refuse_ports_in_use()
        global _started
        _started += 1
        remove_stale_shm_regions()
        remove_stale_work_dirs()
        self.shm_prefix = f"{SHM_PREFIX}{os.getpid()}_{_started}_"
        self._work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))
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
            [sys.executable, "-S", "-c", _EXEC_WRAPPER, str(os.getpid()),
             *self.command(backend_dir)],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=server_environment({**os.environ, **self.environment}),
            start_new_session=True,  # its own process group: stop() reaches every stub
        )  # fmt: skip
        try:
            if self.edge_limits is not None:
                edge_ports = EdgePorts(
                    grpc=self.ports.grpc, http=self.ports.http,
                    triton_grpc=self.triton_ports.grpc, triton_http=self.triton_ports.http,
                )  # fmt: skip
                self.edge = Edge(
                    self.edge_limits, edge_ports, self._work_dir / "edge", address=self.address,
                    tls=self.tls,
                )  # fmt: skip
                try:
                    self.edge.start(_EXEC_WRAPPER)
                except EdgeError as exc:
                    raise ServerError(str(exc)) from exc
            self._wait_until_ready(ready_timeout_s)
            if heal:
                self.watchdog = StubWatchdog(self)
                self.watchdog.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _refuse_ports_in_use(self) -> None:
        """Refuse before anything starts when a port is taken: otherwise another server's
        readiness could answer for this one, which then dies on its bind.

        Raises:
            ServerError: naming the port, its use and the process that holds it.
        """
        for use, port in (("gRPC", self.ports.grpc), ("HTTP", self.ports.http),
                          ("metrics", self.ports.metrics)):  # fmt: skip
            family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.address, port))
                except OSError:
                    raise ServerError(
                        f"{use} port {port} on {self.address} is in use{_holder(port)}; "
                        "stop that server or choose other ports"
                    ) from None

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
        available = sizing.dev_shm_bytes()
        if available is not None and available < needed:
            warnings.warn(
                f"/dev/shm holds {available / 2**30:.1f} GiB, and the python backend may "
                f"need {needed / 2**30:.1f} GiB for a burst of the largest images this "
                "repository admits: enlarge it, or lower --max-image-bytes",
                stacklevel=3,
            )

    def healthy(self) -> bool:
        """Ready, and every model has all its python-backend stubs alive."""
        if self.process is None or self.process.poll() is not None or not self.is_ready():
            return False
        if self.edge is not None and not self.edge.running():
            return False  # clients reach Triton only through the edge
        return self.watchdog is None or self.watchdog.healthy

    def is_ready(self) -> bool:
        try:
            url = f"{self.triton_http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
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

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Stop gracefully (SIGTERM), then kill what is left of the process group.

        Returns the server's exit code, or None if it was never started.
        """
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
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + wait_s
            while process.poll() is None and time.monotonic() < deadline:
                if stale_instances and self._only_stale_models_left(stale_instances):
                    break  # nothing left to drain; see _only_stale_models_left
                time.sleep(0.2)
            if process.poll() is None:
                process.kill()
                process.wait()
        # Stubs normally exit with the server; any that did not are in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self.edge is not None:
            self.edge.stop()
            self.edge = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        for region in SHM_DIR.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()
        if self._work_dir is not None:
            # The log lives here unless the caller chose its path; read it before stop().
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            if not self._keep_log:
                self._log_path = None
        self.process = None
        return process.returncode

    def _only_stale_models_left(self, stale: int) -> bool:
        """While shutting down, Triton logs each second how many models are still live.
        An instance whose stub died never finishes unloading, so a server whose models were
        healed would sit out the whole exit timeout and exit 1. Once Triton is unloading (no
        inference is in flight) and no more models are live than instances were replaced,
        only those are left, and there is nothing to wait for."""
        lines = self.log_tail(200).splitlines()
        if not any("unloading models" in line for line in lines):
            return False
        for line in reversed(lines[-5:]):
            found = re.search(r"Found (\d+) live models and 0 in-flight", line)
            if found:
                return int(found.group(1)) <= stale
        return False

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


# A config parameter no model reads; changing it is what makes Triton reload a model.
RELOAD_PARAMETER = "tvision_reload"


@dataclass
class Heal:
    """One stub death the watchdog noticed, and how long the model took to serve again."""

    model: str
    noticed_at: float
    recovered_s: float | None = None
    error: str = ""
    reported: bool = False


@dataclass
class StubWatchdog:
    """Notices a dead python-backend stub and reloads its model (see the module docstring).

    Each model's stub count, as first seen once the server was ready, is what it should
    have; fewer live (non-zombie) stubs means an instance cannot serve.
    """

    server: TritonServer
    interval_s: float = 0.25
    heals: list[Heal] = field(default_factory=list)
    healthy: bool = True

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tvision-watchdog", daemon=True)
        self.expected = {model: len(pids) for model, pids in self.stubs().items()}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def stubs(self) -> dict[str, list[int]]:
        """Live stub processes by model name."""
        import psutil

        process = self.server.process
        found: dict[str, list[int]] = {}
        if process is None:
            return found
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            return found
        for child in children:
            try:
                command = child.cmdline()
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            if command and command[0].endswith("triton_python_backend_stub"):
                # The first argument is <repository>/<model>/<version>/model.py.
                model = Path(command[1]).parent.parent.name
                found.setdefault(model, []).append(child.pid)
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            live = self.stubs()
            short = [
                model for model, count in self.expected.items() if len(live.get(model, [])) < count
            ]
            if short:
                # An admin may have unloaded the model: its stubs went with it, on purpose.
                states = self.model_states()
                unloaded = [model for model in short if states.get(model, "READY") != "READY"]
                for model in unloaded:
                    del self.expected[model]
                short = [model for model in short if model not in unloaded]
            # A model loaded (again) through model control is watched once it is READY (all
            # its instances, and so all its stubs, are up by then).
            new = [model for model in live if model not in self.expected]
            if new:
                states = self.model_states()
                for model in new:
                    if states.get(model) == "READY":
                        self.expected[model] = len(live[model])
            if not short:
                self.healthy = True
                continue
            self.healthy = False
            for model in short:
                self._reload(model)

    def model_states(self) -> dict[str, str]:
        """Each model's state in the repository index ("READY", "UNAVAILABLE", ...); empty
        when the index cannot be read (then every short model is taken for a dead stub)."""
        import json

        request = urllib.request.Request(
            f"{self.server.triton_http_url}/v2/repository/index",
            data=b"{}",
            method="POST",
            headers=self.server.admin_headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                index = json.loads(reply.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        # One entry per version; a model with any READY version counts as READY.
        states: dict[str, str] = {}
        for entry in index:
            name, state = entry.get("name", ""), entry.get("state", "")
            if states.get(name) != "READY":
                states[name] = state
        return states

    def _reload(self, model: str) -> None:
        """Load the model again with its own config, plus a reload counter, as an override.

        Triton 2.51 reloads a model only when its config changed (an identical override is
        a no-op), so the counter is the change. New instances, with new stubs, replace the
        old ones, and the old instance with the dead stub is unloaded.
        """
        import json

        heal = Heal(model=model, noticed_at=time.monotonic())
        self.heals.append(heal)
        base = f"{self.server.triton_http_url}/v2"
        try:
            with urllib.request.urlopen(f"{base}/models/{model}/config", timeout=30) as reply:
                config = json.loads(reply.read())
            parameters = config.setdefault("parameters", {})
            parameters[RELOAD_PARAMETER] = {"string_value": str(len(self.heals))}
            body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
            request = urllib.request.Request(
                f"{base}/repository/models/{model}/load",
                data=body,
                method="POST",
                headers=self.server.admin_headers,
            )
            with urllib.request.urlopen(request, timeout=120) as reply:
                reply.read()
        except (urllib.error.URLError, OSError) as exc:
            heal.error = str(exc)
            return
        # The new stubs are up when the load returns; give the old ones time to go.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._stop.is_set():
            if len(self.stubs().get(model, [])) >= self.expected[model]:
                break
            time.sleep(0.1)
        heal.recovered_s = time.monotonic() - heal.noticed_at

    def take_unreported_heals(self) -> list[Heal]:
        """The heals that finished (reloaded, or failed) since the last call, each once:
        what ``tvision serve`` reports. A heal still reloading waits for a later call."""
        finished = [
            heal
            for heal in list(self.heals)
            if not heal.reported and (heal.recovered_s is not None or heal.error)
        ]
        for heal in finished:
            heal.reported = True
        return finished


def lockdown_settings(
    admin_key_env: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str | None, EdgeTLS | None]:
    """The admin key held in the variable ``admin_key_env`` names (None: a key made for the
    start), and gRPC TLS from the certificate, key and client CA files (None: plain), as
    ``TritonServer(admin_key=..., tls=...)`` takes them.

    Raises:
        ValueError: the variable holds no key of MIN_ADMIN_KEY_CHARS, a file is missing,
            only one of certificate and key is given, or a client CA without them.
    """
    admin_key = None
    if admin_key_env is not None:
        admin_key = (os.environ if environ is None else environ).get(admin_key_env, "")
        if len(admin_key) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(
                f"--admin-key-env {admin_key_env}: the variable must hold a key of at least "
                f"{MIN_ADMIN_KEY_CHARS} characters (e.g. export NAME=$(openssl rand -hex 32))"
            )
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--grpc-tls-cert and --grpc-tls-key go together")
    if tls_cert is None or tls_key is None:
        if tls_client_ca is not None:
            raise ValueError("--grpc-tls-client-ca needs --grpc-tls-cert and --grpc-tls-key")
        return admin_key, None
    for path in (tls_cert, tls_key, tls_client_ca):
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file")
    client_ca = None if tls_client_ca is None else tls_client_ca.resolve()
    return admin_key, EdgeTLS(tls_cert.resolve(), tls_key.resolve(), client_ca)
