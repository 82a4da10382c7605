"""The SDK's I/O-free core: request building, parsing, deadlines and retry decisions."""

from __future__ import annotations

import random
import time

import grpc
import pytest
from tritonclient.grpc import service_pb2

from tvision_client import RetryPolicy, RetryStats
from tvision_client._core import (
    Deadline,
    RetryingCall,
    TensorNames,
    backoff_s,
    build_infer_request,
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


def test_round_robin_rotates_and_a_retry_avoids_failed_endpoints() -> None:
    from tvision_client._core import RoundRobin

    picker = RoundRobin(3)
    assert [picker.pick() for _ in range(4)] == [0, 1, 2, 0]
    assert picker.pick(avoid={1}) == 2
    assert picker.pick(avoid={0, 2}) == 1
    # Every endpoint failed this call: keep rotating rather than hammer one of them.
    picker = RoundRobin(3)
    picker.pick()
    assert [picker.pick(avoid={0, 1, 2}) for _ in range(3)] == [1, 2, 0]


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
    call.remaining_s()
    assert 0 <= call.after_failure(0, _Unavailable()) <= 0.01
    call.remaining_s()
    call.after_failure(1, _Unavailable())
    assert call.failed_endpoints == {0, 1} and call.attempts == 2
    call.remaining_s()
    with pytest.raises(UnavailableError, match="classify: server is stopping") as raised:
        call.after_failure(0, _Unavailable())
    assert isinstance(raised.value.__cause__, _Unavailable)


def test_retrying_call_raises_at_once_on_a_non_retryable_code() -> None:
    from tvision_client import InvalidInputError

    call = RetryingCall(RetryPolicy(), Deadline(10.0), "classify")
    call.remaining_s()
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
    call.remaining_s()
    assert call.after_failure(0, _Unavailable(grpc.StatusCode.NOT_FOUND)) >= 0
    assert call.avoid() == {0} and cool_down.cooling() == {0}
    call.remaining_s()
    with pytest.raises(ModelNotFoundError):
        call.after_failure(1, _Unavailable(grpc.StatusCode.NOT_FOUND))
    single = RetryingCall(RetryPolicy(), Deadline(10.0), "classify", endpoints=1)
    single.remaining_s()
    with pytest.raises(ModelNotFoundError):
        single.after_failure(0, _Unavailable(grpc.StatusCode.NOT_FOUND))


def test_a_refused_retry_says_the_budget_is_spent() -> None:
    from tvision_client import UnavailableError
    from tvision_client._core import RetryBudget

    budget = RetryBudget(RetryPolicy(budget_ratio=0.0, budget_reserve_per_s=0.0))
    call = RetryingCall(RetryPolicy(), Deadline(10.0), "classify", budget=budget)
    call.remaining_s()
    with pytest.raises(UnavailableError, match="retry budget is spent"):
        call.after_failure(0, _Unavailable())
    assert budget.stats().refused == 1
