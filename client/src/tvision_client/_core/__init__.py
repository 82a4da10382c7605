"""Everything the sync and async clients share. Nothing in this package does I/O.

``Client`` and ``AsyncClient`` only make the calls; every decision is made here, one job
a module, and unit-tested without a server:

- ``defaults``: the clients' default arguments.
- ``channels``: endpoint parsing, gRPC channel options (keepalive, reconnect backoff,
  message size), TLS credentials.
- ``balancing``: which endpoint an attempt goes to (fewest in flight, cool-down).
- ``retry``: the call's deadline, backoff, which failures are retried and where, and the
  client's retry budget.
- ``errors``: a failed gRPC call as the most specific ``ClientError``.
- ``messages``: inference requests built; responses and model information parsed.

The names below are the core's surface for the clients and the tests.
"""

from tvision_client._core.balancing import (
    ENDPOINT_COOL_DOWN_S,
    EndpointCoolDown,
    LeastOutstanding,
)
from tvision_client._core.channels import (
    KEEPALIVE_TIME_MS,
    KEEPALIVE_TIMEOUT_MS,
    MIN_CONNECT_TIMEOUT_MS,
    channel_credentials,
    channel_options,
    parse_endpoints,
)
from tvision_client._core.defaults import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_S,
)
from tvision_client._core.errors import (
    image_name,
    map_rpc_error,
    naming_the_file,
    not_found_error,
)
from tvision_client._core.messages import (
    MAX_IMAGE_BYTES_PARAMETER,
    TensorNames,
    build_infer_request,
    check_image_size,
    deserialize_bytes_tensor,
    image_byte_limit,
    parse_classifications,
    parse_model_info,
    parse_prediction,
    serialize_bytes_tensor,
)
from tvision_client._core.retry import (
    Deadline,
    RetryBudget,
    RetryingCall,
    backoff_s,
    retry_delay_s,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT_S",
    "ENDPOINT_COOL_DOWN_S",
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "MAX_IMAGE_BYTES_PARAMETER",
    "MIN_CONNECT_TIMEOUT_MS",
    "Deadline",
    "EndpointCoolDown",
    "LeastOutstanding",
    "RetryBudget",
    "RetryingCall",
    "TensorNames",
    "backoff_s",
    "build_infer_request",
    "channel_credentials",
    "channel_options",
    "check_image_size",
    "deserialize_bytes_tensor",
    "image_byte_limit",
    "image_name",
    "map_rpc_error",
    "naming_the_file",
    "not_found_error",
    "parse_classifications",
    "parse_endpoints",
    "parse_model_info",
    "parse_prediction",
    "retry_delay_s",
    "serialize_bytes_tensor",
]
