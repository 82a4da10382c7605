"""Everything the sync and async clients share. Nothing in this module does I/O.

Request building, response parsing, error mapping, retry decisions, deadline arithmetic,
channel options and endpoint parsing live here; ``Client`` and ``AsyncClient`` only make
the calls.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2

from tvision_client._errors import (
    ClientError,
    DeadlineExceededError,
    InvalidImageError,
    ModelNotFoundError,
    error_class_for,
)
from tvision_client._types import (
    Classification,
    ModelInfo,
    Prediction,
    RetryPolicy,
    RetryStats,
    TLSConfig,
)

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 16

# Only these codes are retried: the request was not run (no server, or load shed).
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
# Retried on another endpoint only: a replica that is stopping unloads its models before it
# closes its port, and answers NOT_FOUND meanwhile; another replica still has the model.
_RETRYABLE_ELSEWHERE = frozenset({grpc.StatusCode.NOT_FOUND})
# How long an endpoint that just failed a call is passed over by the next calls.
ENDPOINT_COOL_DOWN_S = 1.0


# -- endpoints and channels ---------------------------------------------------------------


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
        ("grpc.keepalive_time_ms", 30_000),
        # gRPC's reconnect backoff grows to 120 s by default; a restarted server would sit
        # unused that long. Cap it so a replica is back in rotation within about 2 s.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
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


class RoundRobin:
    """Picks endpoint indexes in turn; a retry avoids the endpoints that already failed it."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._next = 0

    def pick(self, avoid: frozenset[int] | set[int] = frozenset()) -> int:
        """The next index in turn that is not in ``avoid`` (any, once all are avoided)."""
        for _ in range(self._size):
            index = self._next % self._size
            self._next = index + 1
            if index not in avoid:
                return index
        index = self._next % self._size
        self._next = index + 1
        return index


# -- deadlines and retries ---------------------------------------------------------------


class Deadline:
    """One time budget, on ``time.monotonic()``, shared by a call and all its retries."""

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._expires_at = time.monotonic() + timeout_s

    def remaining_s(self) -> float:
        return max(0.0, self._expires_at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining_s() <= 0.0


def backoff_s(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter backoff before retry number ``attempt`` (1 = first retry)."""
    ceiling = min(
        policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (attempt - 1)
    )
    return (rng or random).uniform(0.0, ceiling)


def retry_delay_s(
    code: grpc.StatusCode | None,
    attempts_made: int,
    policy: RetryPolicy,
    deadline: Deadline,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to sleep before retrying, or None when the failure must be raised."""
    if code not in _RETRYABLE or attempts_made >= policy.max_attempts:
        return None
    delay = backoff_s(policy, attempts_made, rng)
    # Sleeping past the deadline would only turn this error into a deadline error later.
    if delay >= deadline.remaining_s():
        return None
    return delay


class RetryBudget:
    """Retries may add at most ``ratio`` of the calls of the last ``window_s``, plus a
    reserve of ``reserve_per_s``: a shedding server is not answered with more load, while a
    lone failure on an idle server is still retried. Thread-safe; one per client."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = policy.budget_ratio
        self.reserve = policy.budget_reserve_per_s * policy.budget_window_s
        self.window_s = policy.budget_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.total_calls = self.total_retries = self.refused = 0

    def _now(self) -> float:
        now = self._clock()
        horizon = now - self.window_s
        for times in (self._calls, self._retries):
            while times and times[0] < horizon:
                times.popleft()
        return now

    def record_call(self) -> None:
        with self._lock:
            self._calls.append(self._now())
            self.total_calls += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it; count a refusal otherwise."""
        with self._lock:
            now = self._now()
            if len(self._retries) + 1 > self.ratio * len(self._calls) + self.reserve:
                self.refused += 1
                return False
            self._retries.append(now)
            self.total_retries += 1
            return True

    def stats(self) -> RetryStats:
        with self._lock:
            return RetryStats(self.total_calls, self.total_retries, self.refused)


class EndpointCoolDown:
    """Endpoints that failed a call recently; the next calls pass them over for a while."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[int, float] = {}

    def failed(self, endpoint: int) -> None:
        with self._lock:
            self._until[endpoint] = self._clock() + ENDPOINT_COOL_DOWN_S

    def cooling(self) -> set[int]:
        now = self._clock()
        with self._lock:
            return {endpoint for endpoint, until in self._until.items() if until > now}


class RetryingCall:
    """One call's retry state: its deadline, attempts made, and the endpoints that failed it.

    The clients loop: pick an endpoint avoiding ``avoid()``, call with ``remaining_s()``,
    and on an ``RpcError`` sleep (or await) ``after_failure(...)``, which raises the mapped
    ``ClientError`` when the failure is final, or the client's retry budget is spent.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: Deadline,
        what: str,
        rng: random.Random | None = None,
        *,
        endpoints: int = 1,
        budget: RetryBudget | None = None,
        cool_down: EndpointCoolDown | None = None,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self.what = what
        self.attempts = 0
        self.failed_endpoints: set[int] = set()
        self._rng = rng
        self._endpoints = endpoints
        self._budget = budget
        self._cool_down = cool_down
        if budget is not None:
            budget.record_call()

    def avoid(self) -> set[int]:
        """Endpoints this attempt should not use: those that failed it or cool down."""
        cooling = self._cool_down.cooling() if self._cool_down is not None else set()
        return self.failed_endpoints | cooling

    def remaining_s(self) -> float:
        """Call this as each attempt starts: it counts the attempt."""
        self.attempts += 1
        return self.deadline.remaining_s()

    def after_failure(self, endpoint: int, exc: grpc.RpcError) -> float:
        """Seconds to wait before the next attempt.

        Raises:
            ClientError: the most specific subclass, chained to ``exc``, when the failure
                is not retryable, the attempts are used up, or the deadline would pass.
        """
        self.failed_endpoints.add(endpoint)
        code = exc.code() if hasattr(exc, "code") else None
        elsewhere = code in _RETRYABLE_ELSEWHERE and len(self.failed_endpoints) < self._endpoints
        if (code in _RETRYABLE or elsewhere) and self._cool_down is not None:
            self._cool_down.failed(endpoint)
        retry_as = grpc.StatusCode.UNAVAILABLE if elsewhere else code
        delay = retry_delay_s(retry_as, self.attempts, self.policy, self.deadline, self._rng)
        if delay is None:
            raise map_rpc_error(exc, self.what, self.deadline) from exc
        if self._budget is not None and not self._budget.try_retry():
            error = map_rpc_error(exc, self.what, self.deadline)
            error.args = (f"{error.args[0]} (not retried: the client's retry budget is spent)",)
            raise error from exc
        return delay


def map_rpc_error(exc: grpc.RpcError, what: str, deadline: Deadline | None = None) -> ClientError:
    """The most specific ``ClientError`` for a failed call; chain it with ``from exc``."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    if code is None:
        return ClientError(f"{what}: {exc}")
    error_class = error_class_for(code)
    message = f"{what}: {details or code.name}"
    if error_class is DeadlineExceededError and deadline is not None:
        message = f"{what}: deadline of {deadline.timeout_s:g} s exceeded ({details or code.name})"
    return error_class(message, code=code)


def not_found_error(model: str, exc: grpc.RpcError) -> ClientError:
    """Triton reports an unknown model as INVALID_ARGUMENT or NOT_FOUND, depending on the call."""
    return ModelNotFoundError(
        f"model {model!r} is not available on the server: {exc.details()}", code=exc.code()
    )


# -- requests and responses --------------------------------------------------------------


def serialize_bytes_tensor(elements: Sequence[bytes]) -> bytes:
    """KServe v2 BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    parts = []
    for element in elements:
        parts.append(struct.pack("<I", len(element)))
        parts.append(element)
    return b"".join(parts)


def deserialize_bytes_tensor(raw: bytes) -> list[bytes]:
    elements = []
    offset = 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def check_image_size(data: bytes, position: int, max_bytes: int) -> None:
    """Reject an image the server or channel would refuse, before it is sent.

    Raises:
        InvalidImageError: the image is larger than ``max_bytes``.
    """
    if len(data) > max_bytes:
        raise InvalidImageError(
            f"image {position} is {len(data)} bytes, over the limit of {max_bytes} bytes"
        )


@dataclass(frozen=True)
class TensorNames:
    input_name: str
    output_name: str


def build_infer_request(
    model: str, names: TensorNames, images: Sequence[bytes], top_k: int
) -> service_pb2.ModelInferRequest:
    """One request with ``len(images)`` images as a [N, 1] BYTES tensor, asking for top-k.

    Raises:
        ValueError: ``top_k`` is not positive.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = names.input_name
    tensor.datatype = "BYTES"
    tensor.shape.extend([len(images), 1])
    request.raw_input_contents.append(serialize_bytes_tensor(images))
    output = request.outputs.add()
    output.name = names.output_name
    # Triton's classification extension: the server returns "score:index:label" strings.
    output.parameters["classification"].int64_param = top_k
    return request


def parse_classifications(
    response: service_pb2.ModelInferResponse, count: int, model: str
) -> list[Classification]:
    """Split the classification strings of a response into one result per image.

    Raises:
        ClientError: the response does not hold classification output.
    """
    if not response.raw_output_contents:
        raise ClientError(f"model {model!r} returned no classification output")
    elements = deserialize_bytes_tensor(response.raw_output_contents[0])
    if count == 0 or len(elements) % count:
        raise ClientError(f"model {model!r} returned {len(elements)} results for {count} images")
    per_image = len(elements) // count
    results = []
    for image in range(count):
        predictions = [
            parse_prediction(element)
            for element in elements[image * per_image : (image + 1) * per_image]
        ]
        predictions.sort(key=lambda prediction: prediction.score, reverse=True)
        results.append(Classification(predictions=predictions, model=model))
    return results


def parse_prediction(element: bytes) -> Prediction:
    """Parse ``b"score:index:label"``; the label itself may contain colons."""
    text = element.decode("utf-8")
    score, index, *label = text.split(":", 2)
    return Prediction(label=label[0] if label else "", index=int(index), score=float(score))


def parse_model_info(
    metadata: service_pb2.ModelMetadataResponse, config: service_pb2.ModelConfigResponse
) -> ModelInfo:
    """Build ``ModelInfo`` from the server's metadata and config replies.

    Raises:
        ClientError: the model does not have exactly one input and one output.
    """
    if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
        raise ClientError(
            f"model {metadata.name!r} has {len(metadata.inputs)} inputs and "
            f"{len(metadata.outputs)} outputs; an image classifier has one of each"
        )
    output = metadata.outputs[0]
    model_config = config.config
    limits = {key: value.string_value for key, value in model_config.parameters.items()}
    return ModelInfo(
        name=metadata.name,
        versions=list(metadata.versions),
        input_name=metadata.inputs[0].name,
        input_datatype=metadata.inputs[0].datatype,
        output_name=output.name,
        num_classes=int(output.shape[-1]),
        max_batch_size=int(model_config.max_batch_size),
        limits=limits,
    )


def image_byte_limit(info: ModelInfo, max_message_bytes: int) -> int:
    """The smaller of the server's image limit and what the channel can carry."""
    server_limit = info.limits.get("max_image_bytes")
    # Leave room for the rest of the request message.
    channel_limit = max_message_bytes - 64 * 1024
    return min(int(server_limit), channel_limit) if server_limit else channel_limit


def chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]
