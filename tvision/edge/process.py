"""The edge's nginx process: started as a child that dies with its launcher, stopped
gracefully."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from tvision.edge.config import EdgeError, EdgeLimits, EdgePorts, EdgeTLS, render_config


def nginx_binary() -> str:
    """Raises EdgeError when nginx is not installed."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)),
        None,
    )
    if found is None:
        raise EdgeError(
            "nginx is not installed: the edge in front of Triton needs it "
            "(Debian: apt-get install nginx-light; `make demo` installs it as root)"
        )
    return found


class Edge:
    """An nginx process in front of a local Triton; use start() and stop()."""

    def __init__(
        self,
        limits: EdgeLimits,
        ports: EdgePorts,
        work_dir: Path,
        *,
        address: str = "127.0.0.1",
        tls: EdgeTLS | None = None,
    ) -> None:
        self.limits = limits
        self.ports = ports
        self.address = address
        self.tls = tls
        self.work_dir = work_dir
        self.config_path = work_dir / "nginx.conf"
        self.log_path = work_dir / "nginx.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(
        self, exec_wrapper: str, ready_timeout_s: float = 30.0, config: str | None = None
    ) -> Edge:
        """Start nginx as a child that dies with this process (see ``exec_wrapper``), with
        ``render_config``'s output, or ``config`` as given (the pod's, in a test).

        Raises:
            EdgeError: nginx is missing, refused the configuration, or did not listen.
        """
        import getpass

        binary = nginx_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if config is None:
            config = render_config(
                self.limits, self.ports, address=self.address, work_dir=str(self.work_dir),
                tls=self.tls, run_as=getpass.getuser() if os.geteuid() == 0 else None,
            )  # fmt: skip
        self.config_path.write_text(config, encoding="utf-8")
        command = [binary, "-e", "stderr", "-p", str(self.work_dir), "-c", str(self.config_path)]
        checked = subprocess.run(
            [*command, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        if checked.returncode != 0:
            raise EdgeError(f"nginx refused its configuration:\n{checked.stderr.strip()}")
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-S", "-c", exec_wrapper, str(os.getpid()), *command],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + ready_timeout_s
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise EdgeError(f"nginx did not start:\n{log}")
            time.sleep(0.05)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _listening(self) -> bool:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "::", "") else self.address
        for port in (self.ports.grpc, self.ports.http, self.ports.health):
            if port is None:
                continue
            try:
                socket.create_connection((host, port), timeout=0.5).close()
            except OSError:
                return False
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """nginx's graceful stop: requests in flight finish (for up to ``timeout_s``)."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGQUIT)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
