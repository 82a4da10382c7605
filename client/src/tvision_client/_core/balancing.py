"""Which endpoint an attempt goes to: the fewest attempts in flight, passing over those
that failed a call in the last ``ENDPOINT_COOL_DOWN_S``. Thread-safe."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# How long an endpoint that just failed a call is passed over by the next calls.
ENDPOINT_COOL_DOWN_S = 1.0
ENDPOINT_COOL_DOWN_MAX_S = 4.0


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


class EndpointCoolDown:
    """Endpoints that failed a call recently; the next calls pass them over for a while."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[int, float] = {}
        self._streak: dict[int, int] = {}

    def failed(self, endpoint: int) -> None:
        """Pass ``endpoint`` over for ENDPOINT_COOL_DOWN_S; for twice as long each time it
        fails again right after its cool-down ended (a dead or black-holed replica, whose
        every probe would cost a retry from the budget), up to ENDPOINT_COOL_DOWN_MAX_S.
        Failures while it cools (calls already in flight) do not lengthen it."""
        with self._lock:
            now = self._clock()
            until = self._until.get(endpoint)
            streak = self._streak.get(endpoint, 0)
            if until is not None and now < until:
                return
            if until is None or now - until > ENDPOINT_COOL_DOWN_S:
                streak = 0  # it served, or nobody asked, in between: start again
            else:
                streak += 1
            self._streak[endpoint] = streak
            self._until[endpoint] = now + min(
                ENDPOINT_COOL_DOWN_MAX_S, ENDPOINT_COOL_DOWN_S * 2**streak
            )

    def cooling(self) -> set[int]:
        now = self._clock()
        with self._lock:
            return {endpoint for endpoint, until in self._until.items() if until > now}
