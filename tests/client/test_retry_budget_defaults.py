"""The retry budget's and the endpoint cool-down's defaults, as the README states them
("10% of recent calls plus 2 per second"; the SDK "passes over an endpoint that just failed
for a second"), and that they behave so: counted on the I/O-free core with its injected
clock, so no test waits for time to pass."""

from __future__ import annotations

import re

from tests.helpers import ROOT
from tvision_client import RetryPolicy
from tvision_client._core import EndpointCoolDown, RetryBudget

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_budget() -> tuple[float, float]:
    """(fraction of recent calls, retries per second) from "Retries cannot storm"."""
    found = re.search(r"(\d+)% of recent calls plus\s+(\d+) per second", README)
    assert found, "the README's retry budget sentence"
    return int(found[1]) / 100, float(found[2])


def _readme_cool_down_s() -> float:
    found = re.search(r"passes over an endpoint\s+that just failed for (a|\d+) seconds?", README)
    assert found, "the README's endpoint cool-down sentence"
    return 1.0 if found[1] == "a" else float(found[1])


class _Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> float:
        return self.ms / 1000


def test_the_default_policy_is_the_readmes_budget() -> None:
    ratio, per_s = _readme_budget()
    policy = RetryPolicy()
    assert (policy.budget_ratio, policy.budget_reserve_per_s) == (ratio, per_s)


def test_an_idle_client_gets_the_reserve_of_retries_per_second_and_no_more() -> None:
    """No calls at all, a retry asked for every 100 ms for 60 s: the reserve alone grants
    them, at the README's rate. Bound: the first window grants its whole reserve at once,
    so the count may exceed rate x 60 s by one window's reserve, never more."""
    _, per_s = _readme_budget()
    clock = _Clock()
    budget = RetryBudget(RetryPolicy(), clock)
    window_s = RetryPolicy().budget_window_s
    granted = 0
    for _ in range(600):
        granted += budget.try_retry()
        clock.ms += 100
    assert per_s * 60 <= granted <= per_s * (60 + window_s), granted
    assert budget.stats().refused == 600 - granted > 0


def test_under_load_retries_add_the_ratio_of_calls_plus_the_reserve() -> None:
    """100 calls per second for 120 s, each followed by a failure that asks for a retry
    (a server shedding everything): the retries granted per second, counted over the last
    60 s (after the first window filled), are ratio x 100 + the reserve's rate. Bound: a
    sliding window's edges move the count by at most one window's grants (2%)."""
    ratio, per_s = _readme_budget()
    clock = _Clock()
    budget = RetryBudget(RetryPolicy(), clock)
    granted_late = 0
    for tick in range(120 * 100):  # one call each 10 ms
        budget.record_call()
        granted = budget.try_retry()
        if tick >= 60 * 100:
            granted_late += granted
        clock.ms += 10
    expected = (ratio * 100 + per_s) * 60
    assert abs(granted_late - expected) <= 0.02 * expected, (granted_late, expected)
    # Far fewer retries than calls: the server sees at most 1.12 requests per call.
    stats = budget.stats()
    assert stats.retries + stats.refused == stats.calls == 12_000


def test_a_failed_endpoint_is_passed_over_for_the_readmes_cool_down() -> None:
    cool_down_s = _readme_cool_down_s()
    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    cool_down.failed(1)
    assert cool_down.cooling() == {1}
    clock.ms += int(cool_down_s * 1000) - 10  # 10 ms before it ends
    assert cool_down.cooling() == {1}
    cool_down.failed(0)
    clock.ms += 20  # 10 ms after endpoint 1's ends
    assert cool_down.cooling() == {0}
    clock.ms += int(cool_down_s * 1000)
    assert cool_down.cooling() == set()
