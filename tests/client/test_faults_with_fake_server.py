"""Retries, deadlines, balancing and metadata under faults injected by a FAKE gRPC server.

A real Triton cannot be made to answer UNAVAILABLE exactly twice, to stall one call on
demand, to be slower by a set time than its twin, to hang on every call while its port
stays open, or to have its connection go silent without closing, so these tests use
``fake_server.py``. Everything else is tested on the real server.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from tests.client.fake_server import BlackHoleProxy, FaultPlan, fake_server
from tvision_client import (
    NO_RETRY,
    AsyncClient,
    Client,
    DeadlineExceededError,
    InvalidInputError,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
)
from tvision_client._core import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def test_fake_unavailable_twice_is_retried_and_succeeds() -> None:
    plan = FaultPlan(fail_times=2)
    with fake_server(plan) as address, Client(address, retry=FAST_RETRY) as client:
        result = client.classify(b"image")
    assert result.top.label == "fake"
    assert plan.infer_calls == 3


def test_fake_unavailable_beyond_max_attempts_raises_unavailable() -> None:
    plan = FaultPlan(fail_times=10)
    with fake_server(plan) as address, Client(address, retry=FAST_RETRY) as client:
        with pytest.raises(UnavailableError) as raised:
            client.classify(b"image")
    assert plan.infer_calls == FAST_RETRY.max_attempts
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert isinstance(raised.value.__cause__, grpc.RpcError)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInputError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
    ],
)
def test_fake_non_retryable_codes_are_raised_at_once(code, error) -> None:
    plan = FaultPlan(fail_times=1, fail_code=code)
    with fake_server(plan) as address, Client(address, retry=FAST_RETRY) as client:
        with pytest.raises(error, match="injected fault 1"):
            client.classify(b"image")
    assert plan.infer_calls == 1


def test_fake_one_deadline_covers_the_call_and_all_its_retries() -> None:
    # Each attempt stalls 0.4 s then fails UNAVAILABLE; with a 1 s budget the client may not
    # run four full attempts (1.6 s): it must stop at the budget.
    plan = FaultPlan(fail_times=100, stall_s=0.4)
    retry = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.01)
    with fake_server(plan) as address, Client(address, retry=retry, timeout_s=1.0) as client:
        client.model_info()  # metadata is not part of the measured call
        started = time.monotonic()
        with pytest.raises((DeadlineExceededError, UnavailableError)):
            client.classify(b"image")
        elapsed_s = time.monotonic() - started
    assert elapsed_s < 1.3
    assert plan.infer_calls < 4


def test_fake_stalled_call_raises_deadline_exceeded_with_the_budget_in_the_message() -> None:
    plan = FaultPlan(stall_s=1.0)
    with fake_server(plan) as address, Client(address, retry=NO_RETRY) as client:
        client.model_info()
        with pytest.raises(DeadlineExceededError, match=r"deadline of 0\.2 s"):
            client.classify(b"image", timeout_s=0.2)


def test_fake_metadata_is_sent_on_every_call() -> None:
    plan = FaultPlan(fail_times=1)
    token = {"authorization": "Bearer s3cret"}
    with fake_server(plan) as address, Client(address, retry=FAST_RETRY, metadata=token) as client:
        client.classify(b"image")
    assert len(plan.seen_metadata) == 2  # the failed attempt and its retry
    assert all(seen.get("authorization") == "Bearer s3cret" for seen in plan.seen_metadata)


def test_fake_async_client_retries_like_the_sync_one() -> None:
    plan = FaultPlan(fail_times=2)

    async def run(address: str) -> str:
        async with AsyncClient(address, retry=FAST_RETRY) as client:
            return (await client.classify(b"image")).top.label

    with fake_server(plan) as address:
        assert asyncio.run(run(address)) == "fake"
    assert plan.infer_calls == 3


def test_no_server_at_all_is_unavailable_not_a_hang() -> None:
    with Client("127.0.0.1:1", retry=FAST_RETRY, timeout_s=2.0) as client:
        started = time.monotonic()
        with pytest.raises((UnavailableError, DeadlineExceededError)):
            client.classify(b"image")
        assert time.monotonic() - started < 3.0


# A hung replica costs a call one attempt timeout, then the retry on the healthy one. The
# bound on a call is 3x the attempt timeout: the 2 s over it cover the retry's backoff
# (at most 0.05 s here) and the healthy call on a shared 2-core machine.
ATTEMPT_TIMEOUT_S = 1.0
HUNG_CALL_BOUND_S = 3 * ATTEMPT_TIMEOUT_S
HANG_RETRY = RetryPolicy(
    attempt_timeout_s=ATTEMPT_TIMEOUT_S, initial_backoff_s=0.01, max_backoff_s=0.05
)


def test_fake_hung_endpoint_costs_one_attempt_timeout_and_then_cools_down() -> None:
    # Calls one at a time: with nothing in flight the picker rotates, so without the
    # cool-down every other call would wait on the hung endpoint.
    hung, healthy = FaultPlan(hang=True), FaultPlan()
    with fake_server(hung) as hung_address, fake_server(healthy) as healthy_address:
        with Client([hung_address, healthy_address], retry=HANG_RETRY, timeout_s=10) as client:
            client.model_info()
            durations_s = []
            for _ in range(30):
                started = time.monotonic()
                assert client.classify(b"image").top.label == "fake"
                durations_s.append(time.monotonic() - started)
            assert client._picker.outstanding() == [0, 0]
    assert max(durations_s) < HUNG_CALL_BOUND_S, durations_s
    assert hung.infer_calls >= 1  # the first call did go there
    assert healthy.infer_calls == 30
    assert hung.infer_calls * 10 <= healthy.infer_calls, (hung.infer_calls, healthy.infer_calls)


def test_fake_async_client_leaves_a_hung_endpoint_like_the_sync_one() -> None:
    hung, healthy = FaultPlan(hang=True), FaultPlan()

    async def run(addresses: list[str]) -> list[float]:
        async with AsyncClient(addresses, retry=HANG_RETRY, timeout_s=10) as client:
            await client.model_info()
            durations_s = []
            for _ in range(30):
                started = time.monotonic()
                assert (await client.classify(b"image")).top.label == "fake"
                durations_s.append(time.monotonic() - started)
            assert client._picker.outstanding() == [0, 0]
            return durations_s

    with fake_server(hung) as hung_address, fake_server(healthy) as healthy_address:
        durations_s = asyncio.run(run([hung_address, healthy_address]))
    assert max(durations_s) < HUNG_CALL_BOUND_S, durations_s
    assert hung.infer_calls >= 1
    assert healthy.infer_calls == 30
    assert hung.infer_calls * 10 <= healthy.infer_calls, (hung.infer_calls, healthy.infer_calls)


def test_fake_slow_endpoint_gets_fewer_calls_under_concurrent_load() -> None:
    # 200 ms added on one replica: four threads keep calls in flight, and the picker sends
    # each to the endpoint with fewer of them. Round-robin would split the calls 50/50.
    slow, fast = FaultPlan(stall_s=0.2), FaultPlan()
    with fake_server(slow) as slow_address, fake_server(fast) as fast_address:
        with Client([slow_address, fast_address], retry=FAST_RETRY, timeout_s=30) as client:
            client.model_info()

            def worker() -> None:
                for _ in range(20):
                    client.classify(b"image")

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert client._picker.outstanding() == [0, 0]
    assert slow.infer_calls + fast.infer_calls == 80
    assert fast.infer_calls > 2 * slow.infer_calls, (fast.infer_calls, slow.infer_calls)


def test_fake_black_holed_connection_is_closed_by_keepalive_and_the_call_retried() -> None:
    """No attempt timeout: only pings can notice that the connection went silent. Twice:
    right after a call, when gRPC has usually just sent a flow-control ping whose ack is
    then lost (``grpc.http2.ping_timeout_ms`` ends the wait for it), and after a quiet
    second, when no ping is in flight and only the keepalive ping can notice. That one is
    sent KEEPALIVE_TIME_MS after the last byte received and waits KEEPALIVE_TIMEOUT_MS; the
    bound on each call is 1.5x their sum, well under the 20 s deadline."""
    plan = FaultPlan()
    retry = RetryPolicy(attempt_timeout_s=None, initial_backoff_s=0.01, max_backoff_s=0.05)
    bound_s = 1.5 * (KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS) / 1000
    durations_s = []
    with fake_server(plan) as address, BlackHoleProxy(address) as proxy:
        with Client(proxy.address, retry=retry, timeout_s=20) as client:
            client.classify(b"image")
            for quiet_s in (0.0, 1.0):
                time.sleep(quiet_s)
                proxy.black_hole()
                started = time.monotonic()
                assert client.classify(b"image").top.label == "fake"
                durations_s.append(time.monotonic() - started)
    assert max(durations_s) < bound_s, durations_s
    assert proxy.connections == 3  # each silent connection was replaced by a new one
    assert plan.infer_calls == 3  # the requests sent into the black hole never arrived
