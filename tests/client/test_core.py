"""The SDK's I/O-free core: request building, parsing, deadlines and retry decisions."""

from __future__ import annotations

import heapq
import random
import time

import grpc
import pytest
from tritonclient.grpc import service_pb2

from tvision_client import RetryPolicy, RetryStats
from tvision_client._core import (
    KEEPALIVE_TIME_MS,
    KEEPALIVE_TIMEOUT_MS,
    Deadline,
    EndpointCoolDown,
    LeastOutstanding,
    RetryBudget,
    RetryingCall,
    TensorNames,
    backoff_s,
    build_infer_request,
    channel_options,
    deserialize_bytes_tensor,
    parse_classifications,
    parse_endpoints,
    parse_prediction,
    retry_delay_s,
    serialize_bytes_tensor,
)


def test_bytes_tensor_round_trip_with_empty_and_binary_elements() -> None:
    elements = [b"", b"\x00\xff\x10", b"jpeg" * 100]
    raw = serialize_bytes_tensor(elements)
    assert len(raw) == 4 * 3 + 3 + 400
    assert deserialize_bytes_tensor(raw) == elements


def test_request_asks_for_classification_top_k() -> None:
    request = build_infer_request("m", TensorNames("IN", "OUT"), [b"a", b"bc"], top_k=3)
    assert request.model_name == "m"
    assert list(request.inputs[0].shape) == [2, 1]
    assert request.inputs[0].datatype == "BYTES"
    assert request.outputs[0].parameters["classification"].int64_param == 3
    with pytest.raises(ValueError, match="top_k"):
        build_infer_request("m", TensorNames("IN", "OUT"), [b"a"], top_k=0)


def test_label_with_colons_is_kept_whole() -> None:
    prediction = parse_prediction(b"0.25:7:ratio 16:9 screen")
    assert (prediction.index, prediction.label, prediction.score) == (7, "ratio 16:9 screen", 0.25)


def test_classifications_split_per_image_and_sorted() -> None:
    response = service_pb2.ModelInferResponse()
    response.raw_output_contents.append(
        serialize_bytes_tensor([b"0.1:1:b", b"0.7:0:a", b"0.9:5:f", b"0.05:2:c"])
    )
    first, second = parse_classifications(response, count=2, model="m")
    assert [p.label for p in first.predictions] == ["a", "b"]
    assert second.top.label == "f"


def test_endpoints_accept_lists_commas_and_dns() -> None:
    assert parse_endpoints("a:1, b:2") == ["a:1", "b:2"]
    assert parse_endpoints(["a:1", "b:2"]) == ["a:1", "b:2"]
    assert parse_endpoints("dns:///triton.ns.svc:8001") == ["dns:///triton.ns.svc:8001"]
    with pytest.raises(ValueError):
        parse_endpoints([])


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.4, multiplier=2.0)
    rng = random.Random(1)
    ceilings = [max(backoff_s(policy, attempt, rng) for _ in range(200)) for attempt in (1, 2, 5)]
    assert ceilings[0] <= 0.1 < ceilings[1] <= 0.2
    assert 0.3 < ceilings[2] <= 0.4


def test_retry_only_unavailable_within_attempts_and_deadline() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
    deadline = Deadline(10.0)
    assert retry_delay_s(grpc.StatusCode.UNAVAILABLE, 1, policy, deadline) is not None
    assert retry_delay_s(grpc.StatusCode.UNAVAILABLE, 3, policy, deadline) is None
    assert retry_delay_s(grpc.StatusCode.INVALID_ARGUMENT, 1, policy, deadline) is None
    assert retry_delay_s(grpc.StatusCode.DEADLINE_EXCEEDED, 1, policy, deadline) is None


def test_no_retry_once_the_deadline_is_spent() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=0.5)
    deadline = Deadline(0.01)
    time.sleep(0.02)
    assert deadline.expired()
    assert retry_delay_s(grpc.StatusCode.UNAVAILABLE, 1, policy, deadline) is None


def _picks(picker: LeastOutstanding, count: int, avoid: set[int] | None = None) -> list[int]:
    """``count`` attempts one after another, each done before the next is picked."""
    picked = []
    for _ in range(count):
        picked.append(picker.pick(avoid=avoid or set()))
        picker.done(picked[-1])
    return picked


def test_idle_picker_rotates_and_a_retry_avoids_failed_endpoints() -> None:
    picker = LeastOutstanding(3)
    assert _picks(picker, 4) == [0, 1, 2, 0]
    assert _picks(picker, 1, avoid={1}) == [2]
    assert _picks(picker, 1, avoid={0, 2}) == [1]
    # Every endpoint failed this call: keep rotating rather than hammer one of them.
    picker = LeastOutstanding(3)
    _picks(picker, 1)
    assert _picks(picker, 3, avoid={0, 1, 2}) == [1, 2, 0]
    assert picker.outstanding() == [0, 0, 0]


def test_picker_prefers_the_endpoint_with_fewest_attempts_in_flight() -> None:
    picker = LeastOutstanding(3)
    assert [picker.pick() for _ in range(3)] == [0, 1, 2]  # one in flight on each
    picker.done(1)
    assert picker.pick() == 1  # the only one with none in flight
    picker.done(2)
    assert picker.outstanding() == [1, 1, 0]
    assert picker.pick(avoid={2}) == 0  # avoid wins over fewer in flight...
    assert picker.pick(avoid={0, 1, 2}) == 2  # ...until all are avoided
    assert picker.outstanding() == [2, 1, 1]


def test_picker_sends_most_calls_to_the_faster_endpoint_under_concurrent_load() -> None:
    """Four workers call in a loop; endpoint 1 takes 10 ticks an attempt, endpoint 0 one
    tick. Simulated on a counter, not timed: picks are counted."""
    picker = LeastOutstanding(2)
    latency_ticks = [1, 10]
    finishing: list[tuple[int, int]] = []  # (tick, endpoint) of the attempts in flight
    for _ in range(4):
        index = picker.pick()
        heapq.heappush(finishing, (latency_ticks[index], index))
    picks = [0, 0]
    while sum(picks) < 400:
        now, index = heapq.heappop(finishing)
        picker.done(index)
        index = picker.pick()
        picks[index] += 1
        heapq.heappush(finishing, (now + latency_ticks[index], index))
    assert picks[0] > 4 * picks[1], picks  # round-robin would split them 200/200


def test_channel_keeps_connections_alive_with_pings_the_server_must_permit() -> None:
    options = dict(channel_options(1024, None))
    assert options["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS <= 10_000
    assert options["grpc.keepalive_timeout_ms"] == KEEPALIVE_TIMEOUT_MS < KEEPALIVE_TIME_MS
    assert options["grpc.http2.ping_timeout_ms"] == KEEPALIVE_TIMEOUT_MS  # any ping's ack
    # Pings on idle connections, and without a limit on pings between data frames.
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.enable_retries"] == 0
    # gRPC takes the minimum reconnect backoff as each connection attempt's timeout too:
    # 200 ms failed the first call to a replica 200 ms away (tests/e2e/test_network_faults).
    assert options["grpc.min_reconnect_backoff_ms"] >= 1_000


class _Unavailable(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "server is stopping"


def test_retrying_call_counts_attempts_avoids_failed_endpoints_and_gives_up() -> None:
    from tvision_client import UnavailableError

    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.01)
    call = RetryingCall(policy, Deadline(10.0), "classify", rng=random.Random(0))
    call.begin_attempt(0)
    assert 0 <= call.after_failure(0, _Unavailable()) <= 0.01
    call.begin_attempt(1)
    call.after_failure(1, _Unavailable())
    assert call.failed_endpoints == {0, 1} and call.attempts == 2
    call.begin_attempt(0)
    with pytest.raises(UnavailableError, match="classify: server is stopping") as raised:
        call.after_failure(0, _Unavailable())
    assert isinstance(raised.value.__cause__, _Unavailable)


class _GoAway(_Unavailable):
    """A fake of what gRPC raises for an attempt on a connection nginx closed in good order
    (after keepalive_requests), with gRPC's own words."""

    def details(self) -> str:
        return "Stream removed (GOAWAY received; Error code: 0; Debug Text: )"


def test_a_goaway_from_a_healthy_endpoint_neither_cools_it_down_nor_fails_it_for_the_call() -> None:
    """The sequence measured in tests/e2e/test_network_faults.py, with fake errors: endpoint
    0 is black-holed and cooling; endpoint 1 answers one attempt with GOAWAY. The retry
    goes back to 1, not to the dead 0, and other calls keep passing 0 over."""
    from tvision_client._core import EndpointCoolDown

    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    cool_down.failed(0)  # another call found 0 dead
    call = RetryingCall(
        RetryPolicy(initial_backoff_s=0.0), Deadline(10.0, clock), "classify",
        endpoints=2, cool_down=cool_down,
    )  # fmt: skip
    assert call.avoid() == {0}
    call.begin_attempt(1)
    assert call.after_failure(1, _GoAway()) == 0.0  # retried
    assert call.failed_endpoints == set() and cool_down.cooling() == {0}
    assert call.avoid() == {0}  # the retry goes to 1 again
    call.begin_attempt(1)
    call.after_failure(1, _Unavailable())  # any other UNAVAILABLE still counts
    assert call.failed_endpoints == {1} and cool_down.cooling() == {0, 1}


def test_retrying_call_raises_at_once_on_a_non_retryable_code() -> None:
    from tvision_client import InvalidInputError

    call = RetryingCall(RetryPolicy(), Deadline(10.0), "classify")
    call.begin_attempt(0)
    with pytest.raises(InvalidInputError):
        call.after_failure(0, _Unavailable(grpc.StatusCode.INVALID_ARGUMENT))
    assert call.attempts == 1


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_retry_budget_caps_retries_to_a_fraction_of_recent_calls() -> None:
    from tvision_client._core import RetryBudget

    clock = _Clock()
    budget = RetryBudget(
        RetryPolicy(budget_ratio=0.1, budget_reserve_per_s=0.1, budget_window_s=10.0), clock
    )
    for _ in range(100):
        budget.record_call()
    granted = sum(budget.try_retry() for _ in range(50))
    assert granted == 11  # 10% of 100 calls, plus a reserve of 0.1/s over 10 s
    assert budget.stats() == RetryStats(calls=100, retries=11, refused=39)
    clock.now += 11  # the window has passed: a lone failure is retried again
    budget.record_call()
    assert budget.try_retry()


def test_not_found_is_retried_elsewhere_only_while_another_endpoint_is_left() -> None:
    from tvision_client import ModelNotFoundError
    from tvision_client._core import EndpointCoolDown

    cool_down = EndpointCoolDown()
    call = RetryingCall(
        RetryPolicy(initial_backoff_s=0.0), Deadline(10.0), "classify",
        endpoints=2, cool_down=cool_down,
    )  # fmt: skip
    call.begin_attempt(0)
    assert call.after_failure(0, _Unavailable(grpc.StatusCode.NOT_FOUND)) >= 0
    assert call.avoid() == {0} and cool_down.cooling() == {0}
    call.begin_attempt(1)
    with pytest.raises(ModelNotFoundError):
        call.after_failure(1, _Unavailable(grpc.StatusCode.NOT_FOUND))
    single = RetryingCall(RetryPolicy(), Deadline(10.0), "classify", endpoints=1)
    single.begin_attempt(0)
    with pytest.raises(ModelNotFoundError):
        single.after_failure(0, _Unavailable(grpc.StatusCode.NOT_FOUND))


def test_a_refused_retry_says_the_budget_is_spent() -> None:
    from tvision_client import UnavailableError
    from tvision_client._core import RetryBudget

    budget = RetryBudget(RetryPolicy(budget_ratio=0.0, budget_reserve_per_s=0.0))
    call = RetryingCall(RetryPolicy(), Deadline(10.0), "classify", budget=budget)
    call.begin_attempt(0)
    with pytest.raises(UnavailableError, match="retry budget is spent"):
        call.after_failure(0, _Unavailable())
    assert budget.stats().refused == 1


_TIMED_OUT = grpc.StatusCode.DEADLINE_EXCEEDED


def test_attempt_timeout_is_shorter_than_the_deadline_and_retried_on_another_endpoint() -> None:
    from tvision_client import DeadlineExceededError

    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    policy = RetryPolicy(attempt_timeout_s=2.0, initial_backoff_s=0.0)
    call = RetryingCall(policy, Deadline(10.0, clock), "classify", endpoints=2, cool_down=cool_down)
    assert call.begin_attempt(0) == 2.0
    clock.now += 2.0
    assert call.after_failure(0, _Unavailable(_TIMED_OUT)) == 0.0  # retried...
    assert call.avoid() == {0} and cool_down.cooling() == {0}  # ...elsewhere; 0 cools down
    # The last endpoint left gets the whole remaining deadline: its timeout has no retry.
    assert call.begin_attempt(1) == 8.0
    clock.now += 8.0
    with pytest.raises(DeadlineExceededError, match=r"deadline of 10 s exceeded"):
        call.after_failure(1, _Unavailable(_TIMED_OUT))
    # A spent deadline says nothing about endpoint 1 (and 0's cool-down is over).
    assert cool_down.cooling() == set()


def test_a_spent_deadline_is_final_and_cools_nothing_down() -> None:
    from tvision_client import DeadlineExceededError

    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    call = RetryingCall(
        RetryPolicy(attempt_timeout_s=2.0), Deadline(1.5, clock), "classify",
        endpoints=2, cool_down=cool_down,
    )  # fmt: skip
    assert call.begin_attempt(0) == 1.5  # less deadline left than an attempt's timeout
    clock.now += 1.5
    with pytest.raises(DeadlineExceededError, match=r"deadline of 1\.5 s exceeded") as raised:
        call.after_failure(0, _Unavailable(_TIMED_OUT))
    assert isinstance(raised.value.__cause__, _Unavailable)
    assert cool_down.cooling() == set() and call.attempts == 1


def test_a_lone_endpoint_is_retried_once_after_an_attempt_timeout() -> None:
    from tvision_client import DeadlineExceededError

    clock = _Clock()
    call = RetryingCall(
        RetryPolicy(attempt_timeout_s=2.0, initial_backoff_s=0.0), Deadline(10.0, clock),
        "classify", endpoints=1,
    )  # fmt: skip
    assert call.begin_attempt(0) == 2.0
    clock.now += 2.0
    assert call.after_failure(0, _Unavailable(_TIMED_OUT)) == 0.0
    assert call.begin_attempt(0) == 8.0  # the retry may use all that is left
    clock.now += 8.0
    with pytest.raises(DeadlineExceededError):
        call.after_failure(0, _Unavailable(_TIMED_OUT))


def test_the_last_attempt_and_a_disabled_attempt_timeout_get_the_whole_deadline() -> None:
    clock = _Clock()
    no_retry = RetryingCall(
        RetryPolicy(max_attempts=1), Deadline(10.0, clock), "classify", endpoints=2
    )
    assert no_retry.begin_attempt(0) == 10.0
    unlimited = RetryingCall(
        RetryPolicy(attempt_timeout_s=None), Deadline(10.0, clock), "classify", endpoints=2
    )
    assert unlimited.begin_attempt(0) == 10.0
    with pytest.raises(ValueError, match="attempt_timeout_s"):
        RetryPolicy(attempt_timeout_s=0.0)


def test_an_attempt_timeout_is_not_retried_once_the_retry_budget_is_spent() -> None:
    from tvision_client import DeadlineExceededError

    clock = _Clock()
    cool_down = EndpointCoolDown(clock)
    policy = RetryPolicy(attempt_timeout_s=2.0, budget_ratio=0.0, budget_reserve_per_s=0.1)
    budget = RetryBudget(policy, clock)  # a reserve of exactly one retry
    call = RetryingCall(
        policy, Deadline(10.0, clock), "classify",
        endpoints=2, budget=budget, cool_down=cool_down,
    )  # fmt: skip
    assert call.begin_attempt(0) == 2.0  # a retry is still in the budget
    assert budget.try_retry()  # another call spends it meanwhile
    clock.now += 2.0
    with pytest.raises(DeadlineExceededError, match="attempt timed out after 2 s") as raised:
        call.after_failure(0, _Unavailable(_TIMED_OUT))
    assert "retry budget is spent" in str(raised.value)
    assert cool_down.cooling() == {0}  # the endpoint still timed out
    # With the budget spent, an attempt is no longer cut short: it could not be retried.
    later = RetryingCall(policy, Deadline(10.0, clock), "classify", endpoints=2, budget=budget)
    assert later.begin_attempt(1) == 10.0
