"""The edge: nginx in front of Triton, so that a request's size and a connection's pace are
bounded before Triton reads them.

Triton 2.51 has no frontend limit on a request's size (no HTTP or gRPC body limit) and never
times out an idle or slow HTTP connection. A request body is copied whole into the python
backend's shared memory before the intake model can refuse it, and that pool never
shrinks; 20,000 idle HTTP connections exhaust its file descriptors and its health endpoint
with them. nginx is the common gRPC and HTTP proxy of this field (ingress-nginx, the
``nginx`` image), and Debian and every base image ship it. In front of Triton it:

- refuses a body over ``max_request_bytes`` with HTTP 413, or over gRPC with
  ``RESOURCE_EXHAUSTED`` and a message that names the limit, before Triton sees the body
  (HTTP bodies are buffered whole by nginx; a gRPC message is streamed, and one cut off at
  the limit is never complete, so Triton never parses it, nor copies it anywhere);
- closes connections that send headers or a body too slowly, and idle ones, and caps the
  requests in progress on each port.

When it runs out of connections it closes the oldest idle ones ("reusing connections"),
so one client holding thousands cannot lock others out. Probes use a health-only port
(``health``, in the pod: no Service or NetworkPolicy rule offers it to clients) or, locally,
the launcher's ``--health-port``, which asks Triton's own loopback port.

The configuration is a pure function of ``EdgeLimits`` and the ports (``render_config``):
the launcher writes it for a local server, and ``k8s/base/edge-nginx.conf`` is the same
function's output for the pod (a test keeps them equal).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# What gRPC clients see for a body over the limit (8 is RESOURCE_EXHAUSTED).
GRPC_RESOURCE_EXHAUSTED = 8


class EdgeError(RuntimeError):
    """nginx is missing, its configuration was refused, or it did not start."""


@dataclass(frozen=True)
class EdgeLimits:
    """What one request and one connection may cost. Numbers a person tunes live here."""

    # The largest request body: one image at the model's byte limit plus the protocol's
    # framing. A batch of several images in one request must fit too.
    max_request_bytes: int = 21 * 1024 * 1024
    # A client must send the headers, and each part of a body, within this.
    client_timeout_s: int = 10
    # An HTTP/1.1 or HTTP/2 (gRPC) connection with no request for this long is closed. The
    # SDK's keepalive pings do not count as requests: an idle SDK channel reconnects.
    idle_timeout_s: int = 60
    # Requests in progress on each port (HTTP, gRPC); more are answered 503 (UNAVAILABLE).
    max_client_connections: int = 4096
    # How long Triton may take to answer one request (inference and model loads).
    upstream_timeout_s: int = 300

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "client_timeout_s", "idle_timeout_s",
                     "max_client_connections", "upstream_timeout_s"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @classmethod
    def for_image_bytes(cls, max_image_bytes: int, **given: int) -> EdgeLimits:
        """Limits whose body limit admits one image of ``max_image_bytes`` and framing."""
        return cls(max_request_bytes=max_image_bytes + 1024 * 1024, **given)


@dataclass(frozen=True)
class EdgePorts:
    """Public ports (nginx) and the loopback ports Triton listens on behind them."""

    grpc: int
    http: int
    triton_grpc: int
    triton_http: int
    # A port that answers only health and readiness (for probes), or none.
    health: int | None = None


@dataclass(frozen=True)
class EdgeTLS:
    """gRPC TLS, terminated at the edge: PEM file paths; ``client_ca`` adds mutual TLS."""

    certificate: Path
    private_key: Path
    client_ca: Path | None = None


def render_config(
    limits: EdgeLimits,
    ports: EdgePorts,
    *,
    address: str,
    work_dir: str,
    tls: EdgeTLS | None = None,
    upstream_host: str = "127.0.0.1",
    run_as: str | None = None,
) -> str:
    """The nginx configuration, as text. ``work_dir`` holds its pid file and temp files;
    ``run_as`` names the workers' user when nginx starts as root (it would take "nobody",
    who cannot write the work directory)."""
    listen_host = f"[{address}]" if ":" in address else address
    too_large = (
        f"request body over the limit of {limits.max_request_bytes} bytes that this server "
        "accepts (one image and its framing)"
    )
    return (
        _process_and_limits(limits, ports, work_dir, upstream_host, run_as)
        + _grpc_server(limits, f"{listen_host}:{ports.grpc}", tls, too_large)
        + _http_server(limits, f"{listen_host}:{ports.http}", too_large)
        + ("" if ports.health is None else _health_server(listen_host, ports.health))
        + "}\n"
    )


def _process_and_limits(
    limits: EdgeLimits, ports: EdgePorts, work_dir: str, upstream_host: str, run_as: str | None
) -> str:
    """nginx's process (user, pid file, log, descriptor budget), then the opening of the
    ``http`` block: temp paths, each client's limits and the two upstreams."""
    # Each proxied connection holds two descriptors (client and Triton), on two ports, and
    # idle connections take one more each until a timeout closes them.
    worker_connections = 4 * limits.max_client_connections + 1024
    return f"""# Written by tvision (tvision/edge.py); see its docstring for each limit's reason.
{f"user {run_as};" if run_as else "# user: as started"}
worker_processes 1;
daemon off;
pid {work_dir}/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile {worker_connections + 1024};
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {work_dir}/client_body;
    proxy_temp_path {work_dir}/proxy;
    fastcgi_temp_path {work_dir}/fastcgi;
    uwsgi_temp_path {work_dir}/uwsgi;
    scgi_temp_path {work_dir}/scgi;
    client_max_body_size {limits.max_request_bytes};
    client_header_timeout {limits.client_timeout_s}s;
    client_body_timeout {limits.client_timeout_s}s;
    send_timeout {limits.client_timeout_s}s;
    keepalive_timeout {limits.idle_timeout_s}s;
    limit_conn_zone $server_port zone=per_port:1m;
    limit_conn_status 503;
    upstream triton_grpc {{
        server {upstream_host}:{ports.triton_grpc};
        keepalive 64;
    }}
    upstream triton_http {{
        server {upstream_host}:{ports.triton_http};
        keepalive 64;
    }}
"""


def _grpc_server(limits: EdgeLimits, listen: str, tls: EdgeTLS | None, too_large: str) -> str:
    """The gRPC port: HTTP/2, TLS when given, RESOURCE_EXHAUSTED for a body over the limit."""
    return f"""    server {{
        listen {listen}{"" if tls is None else " ssl"} http2;
{_grpc_tls(tls)}        limit_conn per_port {limits.max_client_connections};
        grpc_read_timeout {limits.upstream_timeout_s}s;
        grpc_send_timeout {limits.upstream_timeout_s}s;
        location / {{
            grpc_pass grpc://triton_grpc;
        }}
        error_page 413 = @too_large;
        location @too_large {{
            default_type application/grpc;
            add_header grpc-status {GRPC_RESOURCE_EXHAUSTED} always;
            add_header grpc-message "{too_large}" always;
            return 204;
        }}
    }}
"""


def _grpc_tls(tls: EdgeTLS | None) -> str:
    """The gRPC server's TLS lines (none without TLS). With a client CA (mutual TLS), nginx
    answers a bad client as HTTP 495/496; a gRPC client gets UNAUTHENTICATED (16) and why."""
    if tls is None:
        return ""
    lines = f"""        ssl_certificate {tls.certificate};
        ssl_certificate_key {tls.private_key};
        ssl_protocols TLSv1.2 TLSv1.3;
"""
    if tls.client_ca is None:
        return lines
    reason = "a client certificate signed by the server's CA is required"
    return f"""{lines}        ssl_client_certificate {tls.client_ca};
        ssl_verify_client on;
        error_page 495 496 = @no_client_certificate;
        location @no_client_certificate {{
            default_type application/grpc;
            add_header grpc-status 16 always;
            add_header grpc-message "{reason}" always;
            return 204;
        }}
"""


def _http_server(limits: EdgeLimits, listen: str, too_large: str) -> str:
    """The HTTP port: HTTP/1.1 to Triton, a JSON 413 for a body over the limit."""
    return f"""    server {{
        listen {listen};
        limit_conn per_port {limits.max_client_connections};
        location / {{
            proxy_pass http://triton_http;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout {limits.upstream_timeout_s}s;
            proxy_send_timeout {limits.upstream_timeout_s}s;
        }}
        error_page 413 = @too_large;
        location @too_large {{
            default_type application/json;
            return 413 '{{"error":"{too_large}"}}';
        }}
    }}
"""


# Triton's health and model readiness paths, the only ones the health port answers.
HEALTH_PATHS_PATTERN = r"^/v2/(health/(ready|live)|models/[^/]+(/versions/[0-9]+)?/ready)$"


def _health_server(listen_host: str, port: int) -> str:
    return f"""    server {{
        # Probes only: health and readiness, GET, nothing else.
        listen {listen_host}:{port};
        location ~ "{HEALTH_PATHS_PATTERN}" {{
            limit_except GET {{ deny all; }}
            proxy_pass http://triton_http;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 10s;
        }}
        location / {{
            return 404;
        }}
    }}
"""


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

    def stop(self) -> None:
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


# The pod's edge: Triton on loopback behind it, nginx's files in an emptyDir at /tmp/edge.
K8S_EDGE_PORTS = EdgePorts(grpc=8001, http=8000, health=8003, triton_grpc=18001, triton_http=18000)
K8S_TLS_DIR = Path("/etc/tvision/grpc-tls")
K8S_CONFIGS = {
    # kustomize file (relative to k8s/) -> TLS or not
    "base/edge-nginx.conf": None,
    "components/grpc-tls/edge-nginx.conf": EdgeTLS(
        K8S_TLS_DIR / "tls.crt", K8S_TLS_DIR / "tls.key"
    ),
}


def k8s_config(tls: EdgeTLS | None, limits: EdgeLimits | None = None) -> str:
    """The edge's nginx.conf in the pod (the files K8S_CONFIGS names are this output)."""
    return render_config(
        limits or EdgeLimits(), K8S_EDGE_PORTS, address="0.0.0.0", work_dir="/tmp/edge", tls=tls
    )


def write_k8s_configs(k8s_dir: Path) -> list[Path]:
    """(Re)write the pod's edge configs under ``k8s_dir``; run after changing the limits:
    ``python -m tvision.edge k8s``."""
    written = []
    for relative, tls in K8S_CONFIGS.items():
        path = k8s_dir / relative
        path.write_text(k8s_config(tls), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintainer's command, tested through k8s
    if sys.argv[1:] != ["k8s"]:
        sys.exit("usage: python -m tvision.edge k8s")
    for path in write_k8s_configs(Path(__file__).resolve().parents[1] / "k8s"):
        print(f"wrote {path}")
