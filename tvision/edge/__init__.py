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
  requests in progress on each port and from each client address (``max_requests_per_client``:
  a flood from one address, or a client drip-feeding bodies, holds at most that many; more
  are answered 503, over gRPC ``UNAVAILABLE``).

When it runs out of connections it closes the oldest idle ones ("reusing connections"),
so one client holding thousands cannot lock others out. Probes use a health-only port
(``health``, in the pod: no Service or NetworkPolicy rule offers it to clients) or, locally,
the launcher's ``--health-port``, which asks Triton's own loopback port.

The configuration is a pure function of ``EdgeLimits`` and the ports (``render_config``):
the launcher writes it for a local server, and ``k8s/base/edge-nginx.conf`` is the same
function's output for the pod (a test keeps them equal).

The package: ``config`` (the limits, ports and TLS, and ``render_config``), ``process``
(the nginx process), ``k8s`` (the pod's configs, written by ``python -m tvision.edge k8s``).
"""

from __future__ import annotations

from tvision.edge.config import (
    GRPC_RESOURCE_EXHAUSTED,
    GRPC_UNAVAILABLE,
    HEALTH_PATHS_PATTERN,
    EdgeError,
    EdgeLimits,
    EdgePorts,
    EdgeTLS,
    render_config,
)
from tvision.edge.k8s import K8S_CONFIGS, K8S_EDGE_PORTS, K8S_TLS_DIR, k8s_config, write_k8s_configs
from tvision.edge.process import Edge, nginx_binary

__all__ = [
    "GRPC_RESOURCE_EXHAUSTED",
    "GRPC_UNAVAILABLE",
    "HEALTH_PATHS_PATTERN",
    "K8S_CONFIGS",
    "K8S_EDGE_PORTS",
    "K8S_TLS_DIR",
    "Edge",
    "EdgeError",
    "EdgeLimits",
    "EdgePorts",
    "EdgeTLS",
    "k8s_config",
    "nginx_binary",
    "render_config",
    "write_k8s_configs",
]
