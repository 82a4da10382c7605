"""``tvision serve``: the embedded Triton server in the foreground, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from tvision.cli._common import (
    DEFAULT_REPOSITORY,
    Subparsers,
    endpoint_argument,
    fail,
    positive_int,
)
from tvision.edge.config import EdgeLimits
from tvision.exit_codes import EXIT_COULD_NOT_RUN, EXIT_OK

if TYPE_CHECKING:  # pragma: no cover
    from tvision.server import TritonServer


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the embedded Triton server in the foreground")
    parser.add_argument(
        "--repository",
        default=str(DEFAULT_REPOSITORY),
        help="a directory, or an s3:// snapshot URI as 'tvision repo push' prints it",
    )
    endpoint_argument(parser)
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="address every port listens on (default: 127.0.0.1, this machine only; "
        "0.0.0.0 for all interfaces)",
    )
    parser.add_argument(
        "--grpc-port", type=int, default=8001, help="KServe v2 gRPC, the SDK's (default: 8001)"
    )
    parser.add_argument(
        "--http-port", type=int, default=8000, help="KServe v2 HTTP/REST (default: 8000)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus metrics (default: 8002)"
    )
    parser.add_argument(
        "--ready-timeout-s",
        type=float,
        default=240.0,
        help="give up when the models are not ready within this (default: 240)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also answer GET /ready (200 only while every model's stubs are alive) and "
        "GET /live on this port",
    )
    parser.add_argument(
        "--max-requests-per-client", type=positive_int, default=None, metavar="N",
        help="requests in progress the edge admits from one client address; more are "
        f"answered UNAVAILABLE (default: {EdgeLimits().max_requests_per_client}; raise it for "
        "clients behind one proxy or NAT, or a load test from one machine)",
    )  # fmt: skip
    _add_lockdown_arguments(parser)
    parser.set_defaults(handler=run)


def _add_lockdown_arguments(parser: argparse.ArgumentParser) -> None:
    locked = parser.add_argument_group(
        "admin APIs and TLS (model control, shared memory, statistics, trace and logging are "
        "closed by default, behind a key made for each start and never shown)"
    )
    admin = locked.add_mutually_exclusive_group()
    admin.add_argument(
        "--admin-key-env",
        metavar="NAME",
        default=None,
        help="use the key held in environment variable NAME instead, so that you can call the "
        "admin APIs (HTTP header 'tvision-admin-key', gRPC metadata "
        "'triton-grpc-protocol-tvision-admin-key')",
    )
    admin.add_argument(
        "--open-admin-apis",
        action="store_true",
        help="leave the admin APIs open to anyone who can connect (loopback only; refused on "
        "any other address): anyone who reaches the HTTP port can then load code",
    )
    locked.add_argument("--grpc-tls-cert", type=Path, default=None, help="server certificate PEM")
    locked.add_argument("--grpc-tls-key", type=Path, default=None, help="server private key PEM")
    locked.add_argument(
        "--grpc-tls-client-ca",
        type=Path,
        default=None,
        help="also require client certificates signed by this CA (mutual TLS)",
    )


def run(args: argparse.Namespace) -> int:
    from tvision.server import ServerError, ServerPorts, TritonServer
    from tvision.server.repository import edge_limits_for, served_repository
    from tvision.server.security import lockdown_settings
    from tvision_export.snapshots import StoreError

    ports = ServerPorts(grpc=args.grpc_port, http=args.http_port, metrics=args.metrics_port)
    try:
        repository = served_repository(args.repository, args.endpoint_url)
        admin_key, tls = lockdown_settings(
            args.admin_key_env, args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca
        )
        given = {}
        if args.max_requests_per_client is not None:
            given["max_requests_per_client"] = args.max_requests_per_client
        server = TritonServer(
            repository, ports, address=args.address, admin_key=admin_key,
            open_admin_apis=args.open_admin_apis, tls=tls,
            edge=edge_limits_for(repository, **given),
        )  # fmt: skip
        print(f"starting tritonserver on {args.repository} ...", file=sys.stderr)
        stop = _stop_on_signals()
        server.start(ready_timeout_s=args.ready_timeout_s)
    except (ValueError, StoreError, ServerError) as exc:
        return fail(exc)
    _print_ready(args, server, bool(admin_key), tls is not None)
    health = None
    if args.health_port is not None:
        from tvision.health import HealthEndpoint

        health = HealthEndpoint(server, args.address, args.health_port).start()
        print(f"health: http://{args.address}:{args.health_port}/ready", file=sys.stderr)
    try:
        code = _serve_until_stopped(server, stop)
    finally:
        if health is not None:
            health.stop()
        triton_code = server.stop()
    print(f"stopped (tritonserver exit code {triton_code})", file=sys.stderr)
    return code


def _stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set, saying so."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        print(f"\nreceived {signal.Signals(signum).name}, stopping", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop


def _print_ready(args: argparse.Namespace, server: TritonServer, keyed: bool, tls: bool) -> None:
    if args.open_admin_apis:
        print("admin APIs: OPEN to anyone who can connect (--open-admin-apis)", file=sys.stderr)
    elif keyed:
        print(f"admin APIs: restricted (the key in ${args.admin_key_env})", file=sys.stderr)
    else:
        print("admin APIs: closed (a key made for this start)", file=sys.stderr)
    if tls:
        print("gRPC: TLS", file=sys.stderr)
    print(
        f"ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}\n"
        f"log: {server.log_path}\npress Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )


def _serve_until_stopped(server: TritonServer, stop: threading.Event) -> int:
    """Report each healed stub once, until a signal (0) or the server's death (2)."""
    while not stop.wait(1.0):
        if server.process is None or server.process.poll() is not None:
            print(f"error: tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
            return EXIT_COULD_NOT_RUN
        for heal in server.watchdog.take_unreported_heals() if server.watchdog else []:
            state = (
                f"reloaded in {heal.recovered_s:.1f} s"
                if heal.recovered_s is not None
                else f"reload failed: {heal.error}"
            )
            print(f"a stub of {heal.model} died; {state}", file=sys.stderr, flush=True)
    return EXIT_OK
