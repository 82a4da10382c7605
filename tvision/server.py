"""Runs the real ``tritonserver`` binary that ships in the ``nvidia-pytriton`` wheel.

Only the binary, its libraries and the python backend are used; PyTriton's Python API is
not. The launcher prepares a backend directory with the stub for the running interpreter,
sets the library and executable paths the stub needs, starts the server on loopback, waits
for readiness, and on stop terminates the whole process group so that no python-backend
stub outlives the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launching process dies, even by
    SIGKILL, so a killed ``tvision serve`` or test run cannot orphan a server."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerError(RuntimeError):
    """The server could not be started, or died; the message holds the end of its log."""


@dataclass(frozen=True)
class ServerPorts:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls) -> ServerPorts:
        """Three distinct ports that are free on 127.0.0.1 right now."""
        sockets = []
        try:
            for _ in range(3):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            grpc, http, metrics = (sock.getsockname()[1] for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
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
        repository: Path,
        ports: ServerPorts | None = None,
        *,
        address: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        exit_timeout_s: int = 20,
        log_path: Path | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.ports = ports or ServerPorts()
        self.address = address
        self.extra_args = list(extra_args)
        self.exit_timeout_s = exit_timeout_s
        self._work_dir: Path | None = None
        self._log_path = log_path
        self._log_handle: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.ports.metrics}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise ServerError("the server has not been started")
        return self._log_path

    def command(self, backend_dir: Path) -> list[str]:
        return [
            str(tritonserver_binary()),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.ports.grpc}",
            f"--http-address={self.address}",
            f"--http-port={self.ports.http}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            *self.extra_args,
        ]

    def start(self, ready_timeout_s: float = 240.0) -> TritonServer:
        """Start the server and block until ``/v2/health/ready`` answers 200.

        The server gets SIGTERM if the thread that started it exits, so start it from a
        thread that lives as long as the server (the main thread, usually).

        Raises:
            ServerError: the repository is missing, the server exited, or it was not ready
                within ``ready_timeout_s``; the message holds the end of the server log.
        """
        if not self.repository.is_dir():
            raise ServerError(
                f"model repository {self.repository} does not exist; run 'tvision export' first"
            )
        self._work_dir = Path(tempfile.mkdtemp(prefix="tvision-server-"))
        backend_dir = prepare_backend_dir(self._work_dir / "backends")
        if self._log_path is None:
            self._log_path = self._work_dir / "tritonserver.log"
        log_handle = self._log_path.open("wb")
        self._log_handle = log_handle
        self.process = subprocess.Popen(
            self.command(backend_dir),
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=server_environment(),
            start_new_session=True,  # its own process group: stop() reaches every stub
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_until_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
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
        wait_s = timeout_s if timeout_s is not None else self.exit_timeout_s + 10
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Stubs normally exit with the server; any that did not are in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir / "backends", ignore_errors=True)
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
