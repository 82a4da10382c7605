"""Endpoints and gRPC channels: target parsing, channel options (keepalive, reconnect
backoff, message size) and TLS credentials."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from tvision_client._types import TLSConfig

# HTTP/2 keepalive: a connection that goes silent (a replica black-holed: packets dropped,
# nothing closed) is noticed at most KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS, 8 s, after
# the last byte it brought, instead of by the 20 s TCP user timeout, or never while the
# peer's kernel still acknowledges. gRPC then closes it, its calls fail UNAVAILABLE (and
# are retried elsewhere), and it reconnects. A ping is a 17-byte frame each way every 5 s
# per idle connection. The ack comes from the server's gRPC transport, not from the model,
# so a busy server still answers at once; 3 s leaves room for a congested link.
# The server must accept these pings, or it closes the connection with GOAWAY
# "too_many_pings": Triton needs --grpc-keepalive-permit-without-calls=true,
# --grpc-http2-min-recv-ping-interval-without-data below KEEPALIVE_TIME_MS (at most 4000,
# a margin for timer jitter) and --grpc-http2-max-ping-strikes=0.
KEEPALIVE_TIME_MS = 5_000
KEEPALIVE_TIMEOUT_MS = 3_000
# The shortest time a connection attempt gets to finish (TCP, TLS and HTTP/2 settings).
MIN_CONNECT_TIMEOUT_MS = 2_000


def parse_endpoints(target: str | Sequence[str]) -> list[str]:
    """Normalise ``"host:port"``, ``"a:1,b:2"``, a list, or ``"dns:///name:port"``.

    Raises:
        ValueError: no endpoint was given.
    """
    items = [target] if isinstance(target, str) else list(target)
    endpoints: list[str] = []
    for item in items:
        if item.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
            endpoints.append(item)
        else:
            endpoints.extend(part.strip() for part in item.split(",") if part.strip())
    if not endpoints:
        raise ValueError("at least one endpoint (host:port or dns:///name:port) is required")
    return endpoints


def channel_options(max_message_bytes: int, tls: TLSConfig | None) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # A dns:/// target resolving to several pods gets every pod, balanced per call.
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.enable_retries", 0),  # retries are ours, under one deadline
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # With keepalive on, gRPC waits this long for the ack of any ping (1 minute by
        # default), and sends no keepalive ping while another one, e.g. a flow-control
        # (BDP) probe, is unanswered: without it the black-hole test's call waited out its
        # 20 s deadline. Not in grpc's public header; that test proves the key still works.
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Ping idle connections too: a dead one is then found before a call is sent on it.
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC sends at most 2 pings between data frames by default: an idle connection
        # would no longer be checked after 10 s.
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC's reconnect backoff grows to 120 s by default; a restarted server would sit
        # unused that long. Cap it so a replica is back in rotation within about 2 s.
        ("grpc.initial_reconnect_backoff_ms", 200),
        # gRPC also takes this as each connection attempt's shortest timeout (its
        # min_connect_timeout): at 200 ms, a replica 200 ms away failed its first call
        # ("timed out before receiving SETTINGS frame").
        ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if tls is not None and tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", tls.server_name_override))
    return options


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )
