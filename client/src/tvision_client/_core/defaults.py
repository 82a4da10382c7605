"""The clients' default arguments: one value each, used by ``Client`` and ``AsyncClient``."""

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Half the server edge's per-client cap (16 requests in progress per address), so that two
# batches from one machine fit beside each other without being refused.
DEFAULT_MAX_CONCURRENCY = 8
