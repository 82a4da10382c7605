"""An endpoint that keeps failing is passed over longer each time (a dead replica's every
probe costs a retry from the budget); one that fails once in a while, a second each time."""

from __future__ import annotations

import grpc

from tvision_client._core.balancing import (
    ENDPOINT_COOL_DOWN_MAX_S,
    ENDPOINT_COOL_DOWN_S,
    EndpointCoolDown,
)


class _Clock:
    def __init__(self) -> None:
        self.s = 100.0

    def __call__(self) -> float:
        return self.s


def _cooling_for(cool_down: EndpointCoolDown, clock: _Clock, endpoint: int) -> float:
    """Seconds until ``endpoint`` is back, to 10 ms."""
    start = clock.s
    while endpoint in cool_down.cooling():
        clock.s += 0.01
    return round(clock.s - start, 2)


def test_a_dead_endpoint_is_passed_over_twice_as_long_each_probe_up_to_the_cap() -> None:
    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    seen = []
    for _ in range(5):  # each probe right after the cool-down ends fails again
        cool_down.failed(0)
        cool_down.failed(0)  # a call already in flight fails too: no longer for that
        seen.append(_cooling_for(cool_down, clock, 0))
    assert seen == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert (ENDPOINT_COOL_DOWN_S, ENDPOINT_COOL_DOWN_MAX_S) == (1.0, 4.0)


def test_an_endpoint_that_served_in_between_starts_again_at_a_second() -> None:
    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    cool_down.failed(1)
    _cooling_for(cool_down, clock, 1)
    clock.s += 2 * ENDPOINT_COOL_DOWN_S  # back in rotation a while: it served
    cool_down.failed(1)
    assert _cooling_for(cool_down, clock, 1) == ENDPOINT_COOL_DOWN_S


def test_a_retry_leaves_the_endpoint_that_failed_it_even_when_every_endpoint_cools() -> None:
    """Replica A black-holed (cooling, and it failed this call), replica B cooling after one
    slow attempt of another call: the retry goes to B, not back to A. Found on a fresh
    clone, where such retries failed at once on A's dead channel."""
    import random

    from tvision_client import RetryPolicy
    from tvision_client._core import Deadline, LeastOutstanding, RetryingCall

    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    cool_down.failed(1)  # B: another call's attempt was cut short
    call = RetryingCall(RetryPolicy(), Deadline(10.0), "classify", rng=random.Random(0),
                        endpoints=2, cool_down=cool_down)  # fmt: skip
    call.begin_attempt(0)
    call.after_failure(0, _DeadChannel())  # A fails this call, and now cools too
    assert cool_down.cooling() == {0, 1}
    assert call.avoid() == {0}
    assert LeastOutstanding(2).pick(avoid=call.avoid()) == 1
    # With one endpoint cooling and the other free, both are still avoided as before.
    other = RetryingCall(RetryPolicy(), Deadline(10.0), "classify", endpoints=3,
                         cool_down=cool_down)  # fmt: skip
    assert other.avoid() == {0, 1}


class _DeadChannel(grpc.RpcError):
    """TEST-ONLY: the error gRPC raises at once for a channel whose connection is down."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connections to all backends failing"
