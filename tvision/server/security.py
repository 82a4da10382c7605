"""Who may use the server's admin APIs, and gRPC TLS: closed by default.

The APIs that change or reveal the server's state (``ADMIN_APIS``) answer only requests
that carry an admin key: one given, or one made for each start and known only to its
launcher (and its watchdog). Leaving them open is refused on any address but loopback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tvision.edge import EdgeTLS
from tvision.server.errors import ServerError

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


def admin_key_for(
    address: str, admin_key: str | None, open_admin_apis: bool, own_serving_args: bool
) -> str | None:
    """The key a start restricts ADMIN_APIS with: ``admin_key``, or, without one, a new key
    when the APIs stay closed and the launcher writes the serving flags itself
    (``own_serving_args``); None leaves them unrestricted.

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
    if admin_key is None and not open_admin_apis and own_serving_args:
        admin_key = new_admin_key()
    return admin_key


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
