"""Retries, deadlines and metadata under faults injected by a FAKE gRPC server.

A real Triton cannot be made to answer UNAVAILABLE exactly twice, or to stall one call on
demand, so these tests use ``fake_server.py``. Everything else is tested on the real server.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.client.fake_server import FaultPlan, fake_server
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
