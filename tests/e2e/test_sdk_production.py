"""The SDK's production behaviour against real Triton servers: failover, TLS, auth headers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from tvision.edge import EdgeTLS
from tvision.server import ServerPorts, TritonServer, edge_limits_for, temporary_server
from tvision_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ClientError,
    InvalidImageError,
    RetryPolicy,
    TLSConfig,
    UnavailableError,
)
from tvision_export.samples import sample_photo

pytestmark = pytest.mark.e2e

COFFEE = sample_photo("coffee").path.read_bytes()


def _inference_count(server: TritonServer) -> int:
    return int(_metric(server, "nv_inference_request_success", "efficientnet_lite0"))


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition``; fail the test (instead of hanging) when it stays false."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def test_failover_and_restart_under_load_cost_no_failed_calls(
    cpu_repository: Path, triton_server: TritonServer
) -> None:
    second = TritonServer(cpu_repository, ServerPorts.free()).start()
    retry = RetryPolicy(max_attempts=6, initial_backoff_s=0.02, max_backoff_s=0.5)
    failures: list[BaseException] = []
    successes = 0
    stop = threading.Event()
    try:
        with Client([triton_server.grpc_url, second.grpc_url], retry=retry, timeout_s=30) as client:
            client.wait_until_ready(timeout_s=30)
            before = (_inference_count(triton_server), _inference_count(second))
            for _ in range(8):
                client.classify(COFFEE, top_k=1)
            balanced = (_inference_count(triton_server), _inference_count(second))
            # Round-robin: both servers took part of the traffic.
            assert balanced[0] - before[0] >= 2 and balanced[1] - before[1] >= 2

            def worker() -> None:
                nonlocal successes
                while not stop.is_set():
                    try:
                        assert client.classify(COFFEE, top_k=1).top.label == "espresso"
                        successes += 1
                    except BaseException as exc:  # record anything, then stop
                        failures.append(exc)
                        return

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for thread in threads:
                thread.start()
            _wait_for(lambda: successes >= 20 or bool(failures), 60, "20 calls before the kill")
            # Kill the second server hard, mid-run: no graceful drain.
            assert second.process is not None
            os.killpg(second.process.pid, signal.SIGKILL)
            after_kill = successes
            _wait_for(
                lambda: successes >= after_kill + 30 or bool(failures),
                60,
                "30 calls after the kill",
            )
            # Bring it back on the same ports, still under load: traffic returns to it.
            second.stop()
            second.start()
            back = _inference_count(second)
            restarted_at = successes
            # The SDK caps gRPC's reconnect backoff at 2 s: traffic must return well within 15 s.
            waited_s = 0.0
            while waited_s < 15 and not failures:
                if successes >= restarted_at + 30 and _inference_count(second) - back >= 5:
                    break
                threading.Event().wait(0.25)
                waited_s += 0.25
            served_after_restart = _inference_count(second) - back
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        stop.set()
        second.stop()
    assert failures == []
    assert successes >= after_kill + 60
    assert served_after_restart >= 5


def test_async_client_against_the_real_server(triton_server: TritonServer) -> None:
    async def run() -> list[str]:
        async with AsyncClient(triton_server.grpc_url, timeout_s=60) as client:
            await client.wait_until_ready(timeout_s=30)
            info = await client.model_info()
            assert info.num_classes == 1000 and info.input_name == "IMAGE"
            results = await client.classify_batch([COFFEE, b"bad", COFFEE], return_exceptions=True)
            return [r.top.label if not isinstance(r, ClientError) else "error" for r in results]

    assert asyncio.run(run()) == ["espresso", "error", "espresso"]


def test_model_info_comes_from_the_server(triton_server: TritonServer) -> None:
    with Client(triton_server.grpc_url) as client:
        info = client.model_info()
    assert (info.input_name, info.input_datatype, info.output_name) == (
        "IMAGE",
        "BYTES",
        "PROBABILITIES",
    )
    assert info.num_classes == 1000
    assert info.max_batch_size >= 1
    assert int(info.limits["max_image_bytes"]) > 0
    assert int(info.limits["max_image_pixels"]) > 0


def test_image_over_the_limit_fails_before_it_is_sent(triton_server: TritonServer) -> None:
    with Client(triton_server.grpc_url, max_message_bytes=1024 * 1024) as client:
        with pytest.raises(InvalidImageError, match="over the limit"):
            client.classify(b"\xff\xd8" + b"\x00" * (2 * 1024 * 1024))
        assert client.classify(COFFEE).top.label == "espresso"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import trustme

    directory = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    server_cert = authority.issue_cert("127.0.0.1", "localhost")
    client_cert = authority.issue_cert("tvision-client@example.test")
    paths = {
        "ca": directory / "ca.pem",
        "server_cert": directory / "server.pem",
        "server_key": directory / "server.key",
        "client_cert": directory / "client.pem",
        "client_key": directory / "client.key",
    }
    authority.cert_pem.write_to_path(paths["ca"])
    server_cert.private_key_pem.write_to_path(paths["server_key"])
    server_cert.cert_chain_pems[0].write_to_path(paths["server_cert"])
    client_cert.private_key_pem.write_to_path(paths["client_key"])
    client_cert.cert_chain_pems[0].write_to_path(paths["client_cert"])
    return paths


def _tls_server(
    repository: Path, certificates: dict[str, Path], mutual: bool
) -> AbstractContextManager[TritonServer]:
    """TLS as the launcher serves it: terminated at the edge (nginx), which with ``mutual``
    also requires a client certificate signed by the CA."""
    tls = EdgeTLS(
        certificates["server_cert"],
        certificates["server_key"],
        certificates["ca"] if mutual else None,
    )
    return temporary_server(repository, tls=tls)


def test_server_tls_with_a_custom_root_certificate(cpu_repository, certificates) -> None:
    tls = TLSConfig(root_certificates=certificates["ca"].read_bytes())
    with _tls_server(cpu_repository, certificates, mutual=False) as server:
        with Client(server.grpc_url, tls=tls, timeout_s=30) as client:
            assert client.classify(COFFEE).top.label == "espresso"
        # A plaintext client cannot talk to a TLS server.
        with Client(server.grpc_url, retry=RetryPolicy(max_attempts=1), timeout_s=5) as plain:
            with pytest.raises(ClientError):
                plain.classify(COFFEE)


def test_mutual_tls_requires_the_client_certificate(cpu_repository, certificates) -> None:
    mutual = TLSConfig(
        root_certificates=certificates["ca"].read_bytes(),
        private_key=certificates["client_key"].read_bytes(),
        certificate_chain=certificates["client_cert"].read_bytes(),
    )
    server_only = TLSConfig(root_certificates=certificates["ca"].read_bytes())
    with _tls_server(cpu_repository, certificates, mutual=True) as server:
        with Client(server.grpc_url, tls=mutual, timeout_s=30) as client:
            assert client.classify(COFFEE).top.label == "espresso"
        with (
            Client(
                server.grpc_url, tls=server_only, retry=RetryPolicy(max_attempts=1), timeout_s=5
            ) as client,
            pytest.raises(AuthenticationError, match="client certificate"),
        ):
            client.classify(COFFEE)


def test_bearer_token_metadata_reaches_a_server_that_requires_it(cpu_repository) -> None:
    # Triton's restricted-protocol option admits inference calls only when the header
    # "triton-grpc-protocol-<key>" carries the value; a gateway would check a bearer token
    # the same way, so this proves the SDK's metadata reaches the server on every call.
    token = "Bearer tvision-test-token"
    args = [f"--grpc-restricted-protocol=inference:authorization={token}"]
    header = {"triton-grpc-protocol-authorization": token}
    once = RetryPolicy(max_attempts=1)
    with temporary_server(cpu_repository, extra_args=args) as server:

        def ensemble_requests() -> float:
            return sum(
                _metric(server, family, "efficientnet_lite0")
                for family in ("nv_inference_request_success", "nv_inference_request_failure")
            )

        start = ensemble_requests()
        with Client(server.grpc_url, metadata=header, retry=once, timeout_s=30) as client:
            assert client.classify(COFFEE).top.label == "espresso"
        assert ensemble_requests() - start == 1  # the call with the header reached the model
        refused: list[ClientError] = []
        for metadata in ({}, {"triton-grpc-protocol-authorization": "Bearer wrong"}):
            with Client(server.grpc_url, metadata=metadata, retry=once, timeout_s=10) as client:
                with pytest.raises(ClientError) as raised:
                    client.classify(COFFEE)
            refused.append(raised.value)
        # Refused at the door, before any model ran: nothing more was counted.
        assert ensemble_requests() - start == 1
    for error in refused:
        # Triton answers a restricted protocol's missing or wrong key with UNAVAILABLE and
        # a message that names the header it expects (grpc_server's ExecutePrecondition).
        assert isinstance(error, UnavailableError) and error.code is grpc.StatusCode.UNAVAILABLE
        assert "restricted, expecting header 'triton-grpc-protocol-authorization'" in str(error)


def test_dns_target_resolves(triton_server: TritonServer) -> None:
    # localhost may resolve to ::1 as well, where nothing listens: round_robin skips it.
    target = f"dns:///localhost:{triton_server.ports.grpc}"
    with Client(target, timeout_s=30) as client:
        for _ in range(3):
            assert client.classify(COFFEE).top.label == "espresso"


def _metric(server: TritonServer, name: str, model: str) -> float:
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model="{model}"' in line
    )


def test_one_target_with_two_addresses_balances_per_call(cpu_repository, triton_server) -> None:
    """A resolver target with two addresses, as a headless Service's DNS name gives: gRPC's
    round_robin in the SDK spreads calls over both servers on one channel.

    The second server listens on 127.0.0.2 with the first one's gRPC port, like two pods.
    Fresh, it also shows that warmup ran before the server reported ready.
    """
    from tvision_export.repository import ModelNames
    from tvision_export.spec import DEFAULT_SPEC

    names = ModelNames.for_model(DEFAULT_SPEC.name)
    free = ServerPorts.free()
    ports = ServerPorts(grpc=triton_server.ports.grpc, http=free.http, metrics=free.metrics)
    with temporary_server(cpu_repository, ports, address="127.0.0.2") as second:
        # Ready, and not a request sent yet: the executions counted are the warmup's.
        for model in (names.preprocess, names.classifier):
            assert _metric(second, "nv_inference_exec_count", model) >= 1, model
        assert _metric(second, "nv_inference_request_success", names.ensemble) == 0
        before = [
            _metric(server, "nv_inference_request_success", names.ensemble)
            for server in (triton_server, second)
        ]
        port = triton_server.ports.grpc
        with Client(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}", timeout_s=30) as client:
            for _ in range(20):
                assert client.classify(COFFEE).top.label == "espresso"
        served = [
            _metric(server, "nv_inference_request_success", names.ensemble) - start
            for server, start in zip((triton_server, second), before, strict=True)
        ]
    assert sum(served) == 20
    assert min(served) >= 7, f"calls were not balanced across the two servers: {served}"


def test_file_objects_are_accepted(triton_server: TritonServer) -> None:
    with Client(triton_server.grpc_url) as client, sample_photo("coffee").path.open("rb") as f:
        assert client.classify(f).top.label == "espresso"


def test_overload_is_rejected_fast_with_a_named_reason(default_source, tmp_path) -> None:
    """A queue of one: a burst must get quick UNAVAILABLE rejections, not unbounded waits."""
    import shutil
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tvision_export.options import ServingOptions
    from tvision_export.repository import write_version
    from tvision_export.spec import DEFAULT_SPEC

    repository = tmp_path / "model_repository"
    options = ServingOptions(max_queue_size=1, preprocess_instances=1, classifier_instances=1)
    write_version(repository, DEFAULT_SPEC.name, default_source, options)
    big = sample_photo("chelsea").path.read_bytes()  # a PNG: the slowest to decode
    # 24 callers from one address: above the edge's per-client cap (16), whose 503 names
    # another reason; the queue's rejection is what this test is about.
    edge = edge_limits_for(repository, max_requests_per_client=64)
    with temporary_server(repository, edge=edge) as server:
        with Client(server.grpc_url, retry=RetryPolicy(max_attempts=1), timeout_s=60) as client:
            client.model_info()

            def one(_: int) -> tuple[str, float]:
                started = time.monotonic()
                try:
                    client.classify(big)
                    return "ok", time.monotonic() - started
                except UnavailableError as exc:
                    return str(exc), time.monotonic() - started

            with ThreadPoolExecutor(max_workers=24) as pool:
                outcomes = list(pool.map(one, range(24)))
    rejected = [(message, seconds) for message, seconds in outcomes if message != "ok"]
    assert rejected, "a burst of 24 against a queue of 1 must be shed"
    assert any(message == "ok" for message, _ in outcomes)
    assert all("queue" in message for message, _ in rejected)
    assert min(seconds for _, seconds in rejected) < 1.0
    shutil.rmtree(repository, ignore_errors=True)
