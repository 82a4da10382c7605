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
# The shortest time a connection attempt gets to finish (TCP, TLS and HTTP/2 settings).
MIN_CONNECT_TIMEOUT_MS = 2_000
KEEPALIVE_TIMEOUT_MS = 3_000


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


class LeastOutstanding:
    """Picks the endpoint with the fewest attempts in flight from this client.

    A slow or stuck replica holds its attempts longer, so it is picked less: with 200 ms
    added on one of two replicas, most calls go to the other. Ties (an idle client, calls
    one at a time) rotate as round-robin does. The counts are this client's own and exact,
    so all endpoints are compared rather than two chosen at random ("power of two
    choices" is for many endpoints or shared, stale counts). ``pick`` counts the attempt as
    in flight and ``done`` ends it: every pick must be paired with one ``done``, on success
    or failure. Thread-safe.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._next = 0
        self._outstanding = [0] * size
        self._lock = threading.Lock()

    def pick(self, avoid: frozenset[int] | set[int] = frozenset()) -> int:
        """The endpoint, outside ``avoid`` (all, once all are avoided), with the fewest
        attempts in flight; counts the attempt in flight on it."""
        with self._lock:
            candidates = [index for index in range(self._size) if index not in avoid]
            index = min(
                candidates or range(self._size),
                key=lambda i: (self._outstanding[i], (i - self._next) % self._size),
            )
            self._next = index + 1
            self._outstanding[index] += 1
            return index

    def done(self, index: int) -> None:
        """The attempt picked on ``index`` has ended."""
        with self._lock:
            self._outstanding[index] -= 1

    def outstanding(self) -> list[int]:
        """Attempts in flight, per endpoint."""
        with self._lock:
            return list(self._outstanding)


# -- deadlines and retries ---------------------------------------------------------------


class Deadline:
    """One time budget, on ``time.monotonic()``, shared by a call and all its retries."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._clock = clock
        self._expires_at = clock() + timeout_s

    def remaining_s(self) -> float:
        return max(0.0, self._expires_at - self._clock())

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

    def can_retry(self) -> bool:
        """Whether a retry would be granted now; spends nothing."""
        with self._lock:
            self._now()
            return len(self._retries) + 1 <= self.ratio * len(self._calls) + self.reserve

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

    The clients loop: pick an endpoint avoiding ``avoid()``, call it with the timeout
    ``begin_attempt(endpoint)`` returns, and on an ``RpcError`` sleep (or await)
    ``after_failure(...)``, which raises the mapped ``ClientError`` when the failure is
    final, or the client's retry budget is spent.

    Each attempt's timeout is ``policy.attempt_timeout_s``, or less when less of the
    deadline is left; the call's last attempt gets all that is left. An attempt cut short by
    that timeout (``DEADLINE_EXCEEDED`` with deadline left) puts its endpoint in the
    cool-down and is retried on another endpoint (once on the same one when there is only
    one). Retrying a request that timed out may run it twice on the servers; every call the
    SDK makes is idempotent (classification is pure inference), so that is safe.
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
        self.attempt_timeouts = 0
        self.failed_endpoints: set[int] = set()
        self._rng = rng
        self._endpoints = endpoints
        self._budget = budget
        self._cool_down = cool_down
        self._cut_short = False  # the current attempt's timeout is attempt_timeout_s
        if budget is not None:
            budget.record_call()

    def avoid(self) -> set[int]:
        """Endpoints this attempt should not use: those that failed it or cool down."""
        cooling = self._cool_down.cooling() if self._cool_down is not None else set()
        return self.failed_endpoints | cooling

    def begin_attempt(self, endpoint: int) -> float:
        """Count an attempt on ``endpoint``; the gRPC timeout, in seconds, to give it."""
        self.attempts += 1
        remaining_s = self.deadline.remaining_s()
        limit_s = self.policy.attempt_timeout_s
        self._cut_short = (
            limit_s is not None and limit_s < remaining_s and self._timeout_retryable(endpoint)
        )
        return limit_s if self._cut_short and limit_s is not None else remaining_s

    def _timeout_retryable(self, endpoint: int) -> bool:
        """Whether a timeout of the attempt about to run on ``endpoint`` could be retried."""
        if self.attempts >= self.policy.max_attempts:
            return False
        if self._budget is not None and not self._budget.can_retry():
            return False
        return self._another_endpoint_left(self.failed_endpoints | {endpoint})

    def _another_endpoint_left(self, failed: set[int]) -> bool:
        """After an attempt timeout: an endpoint this call has not failed on, or a lone
        endpoint that has timed out only once."""
        if self._endpoints == 1:
            return self.attempt_timeouts < 1
        return len(failed) < self._endpoints

    def after_failure(self, endpoint: int, exc: grpc.RpcError) -> float:
        """Seconds to wait before the next attempt.

        Raises:
            ClientError: the most specific subclass, chained to ``exc``, when the failure
                is not retryable, the attempts are used up, or the deadline would pass.
        """
        code = exc.code() if hasattr(exc, "code") else None
        # Cut short by attempt_timeout_s, not by the call's own deadline.
        attempt_timed_out = (
            code == grpc.StatusCode.DEADLINE_EXCEEDED
            and self._cut_short
            and not self.deadline.expired()
        )
        retry_timeout = attempt_timed_out and self._another_endpoint_left(
            self.failed_endpoints | {endpoint}
        )
        self.failed_endpoints.add(endpoint)
        if attempt_timed_out:
            self.attempt_timeouts += 1
        elsewhere = code in _RETRYABLE_ELSEWHERE and len(self.failed_endpoints) < self._endpoints
        if (code in _RETRYABLE or elsewhere or attempt_timed_out) and self._cool_down is not None:
            self._cool_down.failed(endpoint)
        retry_as = grpc.StatusCode.UNAVAILABLE if elsewhere or retry_timeout else code
        delay = retry_delay_s(retry_as, self.attempts, self.policy, self.deadline, self._rng)
        if delay is None:
            raise self._error(exc, attempt_timed_out) from exc
        if self._budget is not None and not self._budget.try_retry():
            error = self._error(exc, attempt_timed_out)
            error.args = (f"{error.args[0]} (not retried: the client's retry budget is spent)",)
            raise error from exc
        return delay

    def _error(self, exc: grpc.RpcError, attempt_timed_out: bool) -> ClientError:
        error = map_rpc_error(exc, self.what, self.deadline)
        if attempt_timed_out:
            error.args = (
                f"{self.what}: attempt timed out after {self.policy.attempt_timeout_s:g} s "
                f"(attempt_timeout_s), {self.deadline.remaining_s():.3g} s of the "
                f"{self.deadline.timeout_s:g} s deadline left",
            )
        return error


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
