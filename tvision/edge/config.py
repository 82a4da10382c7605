"""The edge's configuration: what a request and a connection may cost (``EdgeLimits``),
where it listens (``EdgePorts``, ``EdgeTLS``), and nginx.conf as a pure function of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# What gRPC clients see for a body over the limit (8 is RESOURCE_EXHAUSTED).
GRPC_RESOURCE_EXHAUSTED = 8
# What they see for a request over the per-client cap (14 is UNAVAILABLE: the SDK retries
# it with backoff, within its retry budget, as it does a full queue's).
GRPC_UNAVAILABLE = 14


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
    # Far more than Triton's queues hold (the default export: 64 per model), and few
    # enough that nginx's buffers for all of them fit its memory: see stream_window_bytes.
    max_client_connections: int = 1024
    # Requests in progress from one client address (nginx counts each HTTP/2 stream, so
    # each gRPC call in flight); more are answered at once with 503 (gRPC UNAVAILABLE).
    # What the CPU export serves at once (2 preprocessing instances x batches of 8), a
    # quarter of the 64 the door (the intake model's queue) holds: one address flooding
    # the server cannot fill the queues, and another client's request waits behind at most
    # 16 of its requests. With 32, a flood of 1920x1080 images from one address cost a
    # good client's calls up to 4.5 s on 2 cores; with 16, 3.3 s at most in four runs
    # (tests/e2e/test_per_client_limit.py). Clients behind one NAT, or one ingress proxy,
    # share an address and so this cap: raise it for such a deployment (a GPU export
    # queues 512); the benchmarks raise it to their concurrency.
    max_requests_per_client: int = 16
    # The HTTP/2 flow-control window of each gRPC request: how much of a body a client may
    # send before nginx acknowledges it (http2_body_preread_size). With nginx's default,
    # 64 KiB, a 560 KB image 200 ms away took 1.9 s (0.3 s straight to Triton); with 256
    # KiB, 0.7 s (`tvision bench-edge`). nginx holds up to about this much for each
    # request in progress (measured: 35 MiB at the peak of 64 uploads of 3.5 MB, 23 MiB
    # with the default), so max_client_connections of them stay within the pod's 512Mi.
    stream_window_bytes: int = 256 * 1024
    # How long Triton may take to answer one request (inference and model loads).
    upstream_timeout_s: int = 300

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "client_timeout_s", "idle_timeout_s",
                     "max_client_connections", "max_requests_per_client", "stream_window_bytes",
                     "upstream_timeout_s"):  # fmt: skip
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
    busy = (
        f"over the limit of {limits.max_requests_per_client} requests in progress from one "
        "client address (or of all clients on this port); retry later"
    )
    return (
        _process_and_limits(limits, ports, work_dir, upstream_host, run_as)
        + _grpc_server(limits, f"{listen_host}:{ports.grpc}", tls, too_large, busy)
        + _http_server(limits, f"{listen_host}:{ports.http}", too_large, busy)
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
    limit_conn_zone $binary_remote_addr zone=per_client:10m;
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


def _grpc_server(
    limits: EdgeLimits, listen: str, tls: EdgeTLS | None, too_large: str, busy: str
) -> str:
    """The gRPC port: HTTP/2, TLS when given, RESOURCE_EXHAUSTED for a body over the limit,
    UNAVAILABLE for a request over the per-client (or per-port) cap."""
    return f"""    server {{
        listen {listen}{"" if tls is None else " ssl"} http2;
{_grpc_tls(tls)}        limit_conn per_port {limits.max_client_connections};
        limit_conn per_client {limits.max_requests_per_client};
        http2_body_preread_size {limits.stream_window_bytes};
        grpc_read_timeout {limits.upstream_timeout_s}s;
        grpc_send_timeout {limits.upstream_timeout_s}s;
        location / {{
            grpc_pass grpc://triton_grpc;
        }}
{_grpc_status_page("413", "too_large", GRPC_RESOURCE_EXHAUSTED, too_large)}\
{_grpc_status_page("503", "busy", GRPC_UNAVAILABLE, busy)}    }}
"""


def _grpc_status_page(codes: str, name: str, grpc_status: int, message: str) -> str:
    """nginx's own HTTP ``codes`` answered as a gRPC client reads them: ``grpc_status``
    and ``message`` in the headers of an empty reply."""
    return f"""        error_page {codes} = @{name};
        location @{name} {{
            default_type application/grpc;
            add_header grpc-status {grpc_status} always;
            add_header grpc-message "{message}" always;
            return 204;
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
{_grpc_status_page("495 496", "no_client_certificate", 16, reason)}"""


def _http_server(limits: EdgeLimits, listen: str, too_large: str, busy: str) -> str:
    """The HTTP port: HTTP/1.1 to Triton, a JSON 413 for a body over the limit, a JSON 503
    for a request over the per-client (or per-port) cap."""
    return f"""    server {{
        listen {listen};
        limit_conn per_port {limits.max_client_connections};
        limit_conn per_client {limits.max_requests_per_client};
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
        error_page 503 = @busy;
        location @busy {{
            default_type application/json;
            return 503 '{{"error":"{busy}"}}';
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
