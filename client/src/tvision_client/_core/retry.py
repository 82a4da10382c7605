"""Deadlines and retries: one time budget per call, full-jitter backoff, which failures
are retried and where, and the client's retry budget."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable

import grpc

from tvision_client._core.balancing import EndpointCoolDown
from tvision_client._core.errors import map_rpc_error
from tvision_client._errors import ClientError
from tvision_client._types import RetryPolicy, RetryStats

# Only these codes are retried: the request was not run (no server, or load shed).
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
# Retried on another endpoint only: a replica that is stopping unloads its models before it
# closes its port, and answers NOT_FOUND meanwhile; another replica still has the model.
_RETRYABLE_ELSEWHERE = frozenset({grpc.StatusCode.NOT_FOUND})
# gRPC's words for an attempt caught by a connection the server (or a proxy) closed in good
# order: nginx sends GOAWAY after 1,000 requests on one connection (keepalive_requests),
# and the channel opens a new one at once. The endpoint is well: it is neither put in the
# cool-down nor counted as failed by the call. Measured in tests/e2e/test_network_faults.py:
# one GOAWAY from the healthy replica during a black hole put both in the cool-down, sent
# every call to the dead one for a second (66-74 retries instead of 8-10) and failed a
# call whose own retries had only the dead one left.
_DRAINED = "GOAWAY received"


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
        """Endpoints this attempt should not use: those that failed it or cool down. When
        that is every endpoint, only those that failed it: a cool-down is other calls'
        evidence, this call's failures its own (with one replica black-holed and the other
        cooling after one slow attempt, a retry went back to the dead one)."""
        cooling = self._cool_down.cooling() if self._cool_down is not None else set()
        both = self.failed_endpoints | cooling
        return both if len(both) < self._endpoints else set(self.failed_endpoints)

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
        drained = code == grpc.StatusCode.UNAVAILABLE and _DRAINED in _details(exc)
        if not drained:
            self.failed_endpoints.add(endpoint)
        if attempt_timed_out:
            self.attempt_timeouts += 1
        elsewhere = code in _RETRYABLE_ELSEWHERE and len(self.failed_endpoints) < self._endpoints
        failed = code in _RETRYABLE or elsewhere or attempt_timed_out
        if failed and not drained and self._cool_down is not None:
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


def _details(exc: grpc.RpcError) -> str:
    details = exc.details() if hasattr(exc, "details") else None
    return details or ""
