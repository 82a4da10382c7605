"""The ports a server listens on, free ports to choose from, and who holds a taken one."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tvision.server.errors import ServerError


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


def refuse_ports_in_use(address: str, ports: ServerPorts) -> None:
    """Refuse before anything starts when a port is taken: otherwise another server's
    readiness could answer for this one, which then dies on its bind.

    Raises:
        ServerError: naming the port, its use and the process that holds it.
    """
    for use, port in (("gRPC", ports.grpc), ("HTTP", ports.http),
                      ("metrics", ports.metrics)):  # fmt: skip
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                raise ServerError(
                    f"{use} port {port} on {address} is in use{_holder(port)}; "
                    "stop that server or choose other ports"
                ) from None


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
