"""Typed values: configuration in, results out. All frozen."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """One class of a classification, ``score`` being a probability in [0, 1]."""

    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Classification:
    """The top-k predictions for one image, best first."""

    predictions: list[Prediction]
    model: str

    @property
    def top(self) -> Prediction:
        """The best prediction.

        Raises:
            IndexError: the result holds no predictions.
        """
        return self.predictions[0]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and full jitter, and a timeout for each attempt.

    Only failures that are safe to retry are retried: ``UNAVAILABLE`` (no server reached, or
    the server shed load before running the request), and an attempt cut short by
    ``attempt_timeout_s``. Never ``INVALID_ARGUMENT``, and never once the call's deadline is
    spent. ``max_attempts=1`` disables retries.

    ``attempt_timeout_s`` bounds one attempt within the call's deadline, so that a replica
    that has stopped answering (hung, or its connection black-holed) costs a call this long,
    not its whole deadline: the attempt is then retried on another endpoint, and its
    endpoint cools down. An attempt that timed out may still have run on the server;
    retrying is safe because every call the SDK makes is idempotent (classification is pure
    inference; the others only read). The default, 2 s, is twice the p99 of an overloaded
    2-core server (929 ms at concurrency 32, README, ``tvision bench``) and the p99
    objective of the README's load test (2000 ms): an attempt slower than that is better
    spent on another replica, and a 10 s deadline still has room for the retry. ``None``
    gives each attempt the whole remaining deadline.

    An attempt is cut short only when its timeout could be retried: the call's last attempt
    (``max_attempts`` reached, every endpoint already failed this call, or the retry budget
    spent) gets the whole remaining deadline, so a slow answer is never turned into an
    error by this timeout alone. With a single endpoint, a timed-out attempt is retried
    once on that endpoint (a new connection may replace a dead one); a second timeout there
    means the server is slow, and more tries would only add to its load.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    attempt_timeout_s: float | None = 2.0
    # The retry budget, shared by every thread and task of one client: retries may add at
    # most this fraction of the calls made in the last ``budget_window_s``, plus a small
    # reserve, so that a shedding server is not answered with more load (as gRPC's retry
    # throttling and Finagle's retry budget do).
    budget_ratio: float = 0.1
    budget_reserve_per_s: float = 2.0
    budget_window_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.budget_ratio < 0 or self.budget_reserve_per_s < 0 or self.budget_window_s <= 0:
            raise ValueError("the retry budget needs a non-negative ratio and reserve")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("backoff values must be non-negative and multiplier >= 1")
        if self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0:
            raise ValueError("attempt_timeout_s must be positive, or None for no limit")


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class RetryStats:
    """What a client's retry budget has done so far (``Client.retry_stats()``)."""

    calls: int
    retries: int
    refused: int


@dataclass(frozen=True)
class TLSConfig:
    """Server TLS (``root_certificates``) and, with a client key and chain, mutual TLS.

    Values are PEM bytes. ``root_certificates=None`` uses the system roots.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    # Overrides the name checked against the server certificate (e.g. in tests).
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("mutual TLS needs both private_key and certificate_chain")


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about a model; nothing here is hard-coded in the SDK."""

    name: str
    versions: list[str]
    input_name: str
    input_datatype: str
    output_name: str
    num_classes: int
    max_batch_size: int
    limits: dict[str, str] = field(default_factory=dict)
