"""An endpoint that keeps failing is passed over longer each time (a dead replica's every
probe costs a retry from the budget); one that fails once in a while, a second each time."""

from __future__ import annotations

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
