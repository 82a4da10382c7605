"""The fault suite: failures stay with the request or process that caused it, and the
service heals. Every case runs against the real tritonserver and the real model; each adds
a row to the table pytest prints at the end (case, requests sent, failed, recovered in).
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.e2e.conftest import FaultRow
from tests.helpers import ROOT
from tvision.bench.edge import infer_request
from tvision.edge import EdgeLimits
from tvision.health import HealthEndpoint
from tvision.server import (
    SHM_DIR,
    SHM_PREFIX,
    WORK_DIR_PREFIX,
    ServerPorts,
    StubWatchdog,
    TritonServer,
    edge_limits_for,
    temporary_server,
)
from tvision_client import AsyncClient, Client, ClientError, InvalidInputError, RetryStats
from tvision_export import configs, contract
from tvision_export.options import ServingOptions
from tvision_export.repository import ModelNames, write_version
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e

COFFEE = sample_photo("coffee").path.read_bytes()
# Callers of a Load, each classifying back to back.
CALLERS = 4


def _uncapped_edge(repository: Path) -> EdgeLimits:
    """The launcher's edge limits for ``repository`` without the per-client cap."""
    return edge_limits_for(repository, max_requests_per_client=EdgeLimits().max_client_connections)


class Load:
    """``threads`` SDK callers classifying back to back until stopped; counts outcomes."""

    def __init__(self, target: str | list[str], threads: int = CALLERS) -> None:
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self.retry_stats: RetryStats | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = Client(target, timeout_s=30)
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok = self._client.classify(COFFEE, top_k=1).top.label == "espresso"
            except ClientError as exc:
                ok = False
                self.errors.append(str(exc)[:200])
            with self._lock:
                self.sent += 1
                self.failed += not ok

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self.retry_stats = self._client.retry_stats()
        self._client.close()


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def _status(url: str) -> int:
    """The HTTP status, or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _max_failed_during_heal(recovered_s: float) -> int:
    """A call the dead instance has taken fails only after about a second (measured
    1.05-3.3 s: the python backend waits that long on the dead stub), so each caller loses
    at most one call per second of the heal, plus one it is waiting on as the heal ends.
    Measured: 2-10 failed of 90-260, over heals of 2-6 s."""
    return CALLERS * (math.ceil(recovered_s) + 1)


# README: a server whose stub died stops "in about 3 s instead of sitting out its exit
# timeout" (20 s); 7 s of margin for two shared cores.
MAX_STOP_AFTER_HEAL_S = 3 + 7


def _instance_name(stub_pid: int, model: str) -> str:
    """The Triton instance a python-backend stub runs (its command line names it)."""
    return next(
        arg for arg in psutil.Process(stub_pid).cmdline()[1:] if arg.startswith(f"{model}_")
    )


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("kind", ["classifier", "preprocess"])
def test_a_killed_stub_is_replaced_and_readiness_says_so(cpu_repository, fault_table, kind):
    model = f"{DEFAULT_SPEC.name}_{kind}"
    with TritonServer(cpu_repository, ServerPorts.free()) as server:
        health_port = ServerPorts.free().http
        health = HealthEndpoint(server, "127.0.0.1", health_port).start()
        ready_url = f"http://127.0.0.1:{health_port}/ready"
        try:
            assert _status(ready_url) == 200
            watchdog = server.watchdog
            assert watchdog is not None
            before = watchdog.stubs()[model]
            victim = before[0]
            victim_instance = _instance_name(victim, model)
            with Load(server.grpc_url) as load:
                _wait_for(lambda: load.sent >= 20, 30)
                os.kill(victim, signal.SIGKILL)
                # Readiness drops while the model cannot serve, then comes back.
                assert _wait_for(lambda: _status(ready_url) == 503, 5) is not None
                recovered_s = _wait_for(lambda: _status(ready_url) == 200, 30)
            # The load has stopped, and its last calls are counted (a call the dead instance
            # still held when readiness came back may be among them).
            assert recovered_s is not None and recovered_s < 10
            assert [heal.model for heal in watchdog.heals] == [model]
            # What failed is what the dead instance had taken, and it is bounded.
            assert load.failed == len(load.errors) <= _max_failed_during_heal(recovered_s)
            assert all(
                f"Stub process '{victim_instance}' is not healthy" in error for error in load.errors
            ), load.errors
            # Replaced: the victim is dead (a zombie Triton never reaps, which stubs() skips),
            # and the model has a full set of stubs that did not exist before the kill.
            assert _dead(victim)
            new_stubs = set(watchdog.stubs()[model]) - set(before)
            assert len(new_stubs) == len(before), watchdog.stubs()
            # Every call sent after the heal succeeds, and the new instances serve them.
            cpu_before = {pid: _cpu_s(pid) for pid in new_stubs}
            with Load(server.grpc_url) as after:
                _wait_for(lambda: after.sent >= 40, 60)
            assert after.sent >= 40 and after.failed == 0, after.errors[:3]
            assert all(_cpu_s(pid) > cpu_before[pid] for pid in new_stubs)
        finally:
            health.stop()
        stopping = time.monotonic()
        server.stop()
        stop_s = time.monotonic() - stopping
    assert stop_s < MAX_STOP_AFTER_HEAL_S  # a dead stub no longer holds the exit
    fault_table.append(
        FaultRow(f"SIGKILL a {kind} stub under load (4 callers)", load.sent, load.failed,
                 recovered_s, f"stop took {stop_s:.1f} s; then {after.sent} calls, 0 failed")
    )  # fmt: skip


def test_without_the_watchdog_triton_keeps_a_dead_stubs_model_ready(cpu_repository) -> None:
    """Why the watchdog exists: Triton 2.51 neither restarts a python-backend stub that
    died nor reports it. Without the watchdog, calls keep failing on the dead instance
    while Triton's own readiness (the server's, the model's, the ensemble's) stays 200."""
    model = f"{DEFAULT_SPEC.name}_classifier"
    server = TritonServer(cpu_repository, ServerPorts.free())
    server.start(heal=False)
    try:
        victim = StubWatchdog(server).stubs()[model][0]  # listed only; the watchdog never runs
        victim_instance = _instance_name(victim, model)
        os.kill(victim, signal.SIGKILL)
        with Load(server.grpc_url) as load:
            _wait_for(lambda: load.failed >= 3, 60)
        assert load.failed >= 3, f"the dead instance failed no call ({load.sent} sent)"
        assert all(f"Stub process '{victim_instance}' is not healthy" in e for e in load.errors)
        for path in ("health/ready", f"models/{model}/ready", f"models/{DEFAULT_SPEC.name}/ready"):
            assert _status(f"{server.triton_http_url}/v2/{path}") == 200, path
    finally:
        # No heal was recorded, so stop would sit out the 20 s exit timeout: cut it short.
        server.stop(timeout_s=3)


def test_an_admin_unload_is_not_taken_for_a_dead_stub(cpu_repository, fault_table) -> None:
    """Unloading a model through model control ends its stubs on purpose: the watchdog must
    not "heal" it back (it used to try, and fail with 404, four times a second), and it
    watches the model again once it is loaded again."""
    model = f"{DEFAULT_SPEC.name}_preprocess"
    with temporary_server(cpu_repository) as server:
        assert server.watchdog is not None
        admin = server.admin_headers

        def control(action: str) -> None:
            url = f"{server.http_url}/v2/repository/models/{model}/{action}"
            request = urllib.request.Request(url, data=b"{}", method="POST", headers=admin)
            with urllib.request.urlopen(request, timeout=120) as reply:
                assert reply.status == 200

        control("unload")
        gone_s = _wait_for(lambda: model not in server.watchdog.stubs(), 30)
        assert gone_s is not None
        # Many watchdog rounds (every 0.25 s) with the model's stubs gone.
        time.sleep(3)
        assert server.watchdog.heals == []
        assert model not in server.watchdog.expected
        assert server.watchdog.healthy
        control("load")
        assert _wait_for(lambda: model in server.watchdog.expected, 30) is not None
        with Client(server.grpc_url, timeout_s=60) as client:
            assert client.classify(COFFEE).top.label == "espresso"
        # Watched again: a stub killed now is healed.
        os.kill(server.watchdog.stubs()[model][0], signal.SIGKILL)
        assert _wait_for(lambda: bool(server.watchdog.heals), 30) is not None
        assert _wait_for(lambda: server.watchdog.heals[0].recovered_s is not None, 60)
        assert server.watchdog.heals[0].model == model
    fault_table.append(
        FaultRow("admin unload, then load (not a dead stub)", 1, 0, None, "no heal attempted")
    )


def _poison_request() -> service_pb2.ModelInferRequest:
    """A BYTES tensor whose 4-byte length prefix claims more data than follows."""
    request = service_pb2.ModelInferRequest(model_name=DEFAULT_SPEC.name)
    tensor = request.inputs.add(name=contract.ENSEMBLE_INPUT, datatype="BYTES")
    tensor.shape.extend([1, 1])
    request.raw_input_contents.append(struct.pack("<I", 10_000) + b"\xff\xd8 short")
    return request


def _without_intake(repository: Path) -> None:
    """TEST-ONLY: rewire a written repository's ensemble without its intake step, as it was
    before that step existed: image bytes go straight to the batched preprocessing model."""
    names = ModelNames.for_model(DEFAULT_SPEC.name)
    config_path = repository / names.ensemble / contract.CONFIG_FILE
    config = configs.parse(config_path.read_text())
    steps = config.ensemble_scheduling.step
    assert [step.model_name for step in steps][:2] == [names.intake, names.preprocess]
    del steps[0]
    steps[0].input_map[contract.ENSEMBLE_INPUT] = contract.ENSEMBLE_INPUT
    config_path.write_text(configs.to_text(config))
    shutil.rmtree(repository / names.intake)


def _send_until_judged(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> object:
    """The malformed request, sent again while it is shed unjudged (UNAVAILABLE: its queue
    timeout, 1 s, passed on a loaded machine; the SDK's callers beside it retry the same
    way), so that what is checked is how the server judges it."""
    for attempt in range(5):
        try:
            return stub.ModelInfer(_poison_request(), timeout=60)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _poison_beside_goods(
    server: TritonServer, rounds: int = 10, until_a_good_fails: bool = False
) -> tuple[int, int, list[str]]:
    """Each round: one malformed request and 8 good ones at once; with
    ``until_a_good_fails``, the rounds end after the first round in which a good request
    failed. Returns (good sent, good failed, the malformed requests' status codes)."""
    channel = grpc.insecure_channel(server.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    good_sent = good_failed = 0
    poison_codes: list[str] = []
    with Client(server.grpc_url, timeout_s=60) as client, ThreadPoolExecutor(9) as pool:
        client.model_info()
        for _ in range(rounds):
            poison = pool.submit(_send_until_judged, stub)
            goods = [pool.submit(client.classify, COFFEE, 1) for _ in range(8)]
            for future in goods:
                good_sent += 1
                try:
                    good_failed += future.result().top.label != "espresso"
                except ClientError:
                    good_failed += 1
            with pytest.raises(grpc.RpcError) as raised:
                poison.result()
            poison_codes.append(raised.value.code().name)
            if until_a_good_fails and good_failed:
                break
    channel.close()
    return good_sent, good_failed, poison_codes


# One preprocessing instance that waits up to 100 ms to fill a batch: the nine requests of a
# round, sent together, are batched together there.
BATCHED_TOGETHER = ServingOptions(preprocess_instances=1, max_queue_delay_us=100_000)


@pytest.mark.parametrize("case", ["default", "one batch", "control, no intake"])
def test_a_malformed_tensor_fails_only_its_own_request(
    triton_server, default_source, tmp_path, fault_table, case
) -> None:
    if case == "default":
        good_sent, good_failed, poison_codes = _poison_beside_goods(triton_server)
    else:
        repository = tmp_path / "model_repository"
        write_version(repository, DEFAULT_SPEC.name, default_source, BATCHED_TOGETHER)
        if case.startswith("control"):
            _without_intake(repository)
        with temporary_server(repository) as server:
            # The control needs one failure to make its point; the cases only a full count.
            good_sent, good_failed, poison_codes = _poison_beside_goods(
                server, until_a_good_fails=case.startswith("control")
            )
            preprocess = f"{DEFAULT_SPEC.name}_preprocess"
            executions = _metric(server, "nv_inference_exec_count", preprocess)
            requests = _metric(server, "nv_inference_request_success", preprocess) + _metric(
                server, "nv_inference_request_failure", preprocess
            )
        # The good requests were batched with each other at preprocessing (and, without the
        # intake step, with the malformed one).
        assert executions < requests / 2, (executions, requests)
    if case.startswith("control"):
        # Without the intake step the malformed tensor fails the requests batched with it:
        # the failure the intake step exists to contain.
        assert good_failed > 0, f"no good request failed beside {len(poison_codes)} malformed"
        note = f"control (no intake step): {good_failed} good requests failed with it"
    else:
        assert good_failed == 0
        assert poison_codes == ["INVALID_ARGUMENT"] * len(poison_codes)
        note = f"{len(poison_codes)} malformed requests rejected"
    rounds = len(poison_codes)
    fault_table.append(
        FaultRow(f"malformed tensor + 8 good x{rounds}: {case}", good_sent, good_failed, note=note)
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` RGB, and whose pixel data stops after a
    few bytes: its size can be read, but no decoder can decode it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(1000))[:20]
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels)
            + _png_chunk(b"IEND", b""))  # fmt: skip


def _refusal(server: TritonServer, images: list[bytes]) -> grpc.RpcError:
    request = service_pb2.ModelInferRequest(model_name=DEFAULT_SPEC.name)
    tensor = request.inputs.add(name=contract.ENSEMBLE_INPUT, datatype="BYTES")
    tensor.shape.extend([len(images), 1])
    request.raw_input_contents.append(
        b"".join(struct.pack("<I", len(image)) + image for image in images)
    )
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request, timeout=60)
    return raised.value


def test_a_request_over_the_pixel_budget_is_refused_from_its_headers(
    triton_server, fault_table
) -> None:
    """Two 6000x6000 PNGs (72 MP, over the 48 MP budget; each under the 40 MP image limit)
    whose pixel data is cut off after a few bytes. Decoded, each fails; so the budget's
    refusal, when it comes, can only have been decided from the headers."""
    big = _header_only_png(6000, 6000)
    # The control: alone (36 MP, within the budget), the image reaches the decoder, which
    # cannot decode it.
    alone = _refusal(triton_server, [big])
    assert alone.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "corrupt or truncated PNG data" in alone.details(), alone.details()
    budget = ServingOptions().max_request_pixels
    both = _refusal(triton_server, [big, big])
    assert both.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"per-request budget of {budget} pixels" in both.details(), both.details()
    assert "truncated" not in both.details()  # no image was decoded
    with Client(triton_server.grpc_url) as client:
        assert client.classify(COFFEE).top.label == "espresso"
    note = "refused from the headers: the pixels were undecodable"
    fault_table.append(FaultRow("2 x 36 MP PNGs in one request (72 MP > budget)", 1, 1, note=note))


def test_real_photo_formats_decode_right(triton_server, torch_reference) -> None:
    gray = Image.open(sample_photo("coffee").path).convert("L")
    sixteen = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)  # full 16-bit range
    assert sixteen.mode.startswith("I")
    eight_bit_png = _png(gray)
    sixteen_bit_png = _png(sixteen)
    assert Image.open(io.BytesIO(sixteen_bit_png)).mode in ("I;16", "I")
    primary = Image.open(sample_photo("coffee").path).convert("RGB")
    mpo = io.BytesIO()
    primary.save(
        mpo,
        "MPO",
        save_all=True,
        append_images=[primary.transpose(Image.Transpose.FLIP_LEFT_RIGHT)],
    )
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    jpeg = io.BytesIO()
    primary.save(jpeg, "JPEG", quality=90)
    damaged = bytearray(jpeg.getvalue())
    for index in range(len(damaged) // 2, len(damaged) // 2 + 400, 7):
        damaged[index] ^= 0x5A
    with Client(triton_server.grpc_url, timeout_s=60) as client:
        as_eight = client.classify(eight_bit_png, top_k=5)
        as_sixteen = client.classify(sixteen_bit_png, top_k=5)
        # The same picture at 16 bits: the same answer, not a clipped white image.
        assert as_sixteen.top.index == as_eight.top.index
        assert as_sixteen.top.score == pytest.approx(as_eight.top.score, abs=0.02)
        assert client.classify(mpo.getvalue()).top.label == "espresso"
        with pytest.raises(InvalidInputError, match="damaged JPEG data"):
            client.classify(bytes(damaged))


def _served(server: TritonServer) -> int:
    """Ensemble requests the server completed: exact (a success is counted once)."""
    return int(_metric(server, "nv_inference_request_success", DEFAULT_SPEC.name))


def test_stopping_one_of_two_replicas_costs_no_call(cpu_repository, triton_server, fault_table):
    second = TritonServer(cpu_repository, ServerPorts.free()).start()
    first_start, second_start = _served(triton_server), _served(second)
    second_seen = second_start
    try:
        with Load([triton_server.grpc_url, second.grpc_url]) as load:
            _wait_for(lambda: load.sent >= 40, 60)
            second_before_stop = _served(second) - second_start
            stopping = threading.Thread(target=second.stop)  # SIGTERM: a graceful stop
            stopping.start()
            while stopping.is_alive():  # what the second served, until its metrics go
                try:
                    second_seen = _served(second)
                except OSError:
                    break
                time.sleep(0.05)
            stopping.join(timeout=60)
            before = load.sent
            _wait_for(lambda: load.sent >= before + 40, 60)
    finally:
        second.stop()
    first_served = _served(triton_server) - first_start
    assert load.failed == 0, load.errors[:3]
    # Calls reached the replica that stopped, before and while it stopped...
    assert second_before_stop >= 1
    # ...every call was served once, by one replica or the other (the first served the rest)...
    assert first_served + (second_seen - second_start) <= load.sent
    assert first_served >= load.sent - before  # everything after the stop
    # ...and calls that the stopping replica refused were retried on the other one.
    assert load.retry_stats is not None and load.retry_stats.retries >= 1, load.retry_stats
    fault_table.append(FaultRow(
        "SIGTERM one of two replicas under load (4 callers)", load.sent, load.failed,
        note=f"{load.sent - first_served} served by the stopped one; "
        f"{load.retry_stats.retries} failed over",
    ))  # fmt: skip


def _requests_reaching(server: TritonServer) -> int:
    """Ensemble requests the server received. Triton 2.51 counts each failed ensemble
    request twice in the ensemble's failure counter (measured: 3,373 calls without retries
    gave 6,608 failures; 20,815 rejections gave 41,666) and each success once; a request
    rejected because a composing model's queue is full is counted at no composing model
    (measured: 7 of those 20,815 at the intake), so the composing models cannot count."""
    name = DEFAULT_SPEC.name
    success = _metric(server, "nv_inference_request_success", name)
    failure = _metric(server, "nv_inference_request_failure", name)
    return int(success + failure / 2)


def _metric(server: TritonServer, family: str, model: str, reason: str = "") -> float:
    """The sum of one metric family's samples for exactly ``model`` (and ``reason``)."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(family + "{") and f'model="{model}",' in line and reason in line
    )


def test_retries_do_not_multiply_an_overload(default_source, tmp_path, fault_table) -> None:
    repository = tmp_path / "model_repository"
    options = ServingOptions(max_queue_size=8, preprocess_instances=1, classifier_instances=1)
    write_version(repository, DEFAULT_SPEC.name, default_source, options)
    # Triton's queue is what this is about: the edge's per-client cap (all 400 callers come
    # from 127.0.0.1) is raised so that it refuses none (tests/e2e/test_per_client_limit.py).
    with temporary_server(repository, edge=_uncapped_edge(repository)) as server:
        before = _requests_reaching(server)

        async def storm() -> tuple[int, int]:
            async with AsyncClient(server.grpc_url, timeout_s=20) as client:
                await client.model_info()
                stop_at = time.monotonic() + 10
                calls = failures = 0

                async def caller() -> None:
                    nonlocal calls, failures
                    while time.monotonic() < stop_at:
                        calls += 1
                        try:
                            await client.classify(COFFEE, top_k=1)
                        except ClientError:
                            failures += 1

                await asyncio.gather(*(caller() for _ in range(400)))
                stats = client.retry_stats()
                assert stats.calls >= calls and stats.refused > 0
                return calls, failures

        calls, failures = asyncio.run(storm())
        served = _requests_reaching(server) - before
    ratio = served / calls
    assert ratio <= 1.2, f"{served} server requests for {calls} SDK calls"
    fault_table.append(FaultRow("400 async callers on a queue of 8, 10 s", calls, failures,
                                note=f"{ratio:.2f} server requests per SDK call"))  # fmt: skip


def test_overload_is_rejected_at_the_door_within_the_queue_timeout(
    default_source, tmp_path, fault_table
) -> None:
    """200 raw callers (no SDK, so no retries) on the default queue policy, with one
    instance of each model: far more than the queues (64 deep at every step, the door's
    included) can hold. Each request that cannot be served is answered UNAVAILABLE within
    the default 1 s queue timeout and a margin, never after the seconds of queueing that an
    unbounded door and the old 256-deep, 5 s queues allowed (5-22 s measured)."""
    from grpc import aio

    repository = tmp_path / "model_repository"
    options = ServingOptions(preprocess_instances=1, classifier_instances=1)
    write_version(repository, DEFAULT_SPEC.name, default_source, options)
    request = infer_request(COFFEE)
    # The door here is Triton's queues: the edge's per-client cap (all 200 callers come from
    # 127.0.0.1) is raised so that it refuses none (tests/e2e/test_per_client_limit.py).
    with temporary_server(repository, edge=_uncapped_edge(repository)) as server:

        async def flood() -> tuple[list[float], list[float], list[str]]:
            served: list[float] = []
            rejected: list[float] = []
            other: list[str] = []
            async with aio.insecure_channel(server.grpc_url) as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                stop_at = time.monotonic() + 8

                async def caller() -> None:
                    while time.monotonic() < stop_at:
                        started = time.monotonic()
                        try:
                            await stub.ModelInfer(request, timeout=60)
                            served.append(time.monotonic() - started)
                        except aio.AioRpcError as exc:
                            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                                rejected.append(time.monotonic() - started)
                            else:
                                other.append(f"{exc.code().name}: {exc.details()}")

                await asyncio.gather(*(caller() for _ in range(200)))
            return served, rejected, other

        served, rejected, other = asyncio.run(flood())
        assert server.is_ready()
    assert other == []  # shed as UNAVAILABLE, never an internal error
    assert served and rejected
    rejected.sort()
    median_s, worst_s = rejected[len(rejected) // 2], rejected[-1]
    # A full queue answers at once. A request that waited is rejected at the 1 s timeout of
    # the queue it waits in, after at most two others (intake, preprocessing, classifier):
    # 3 s, plus 2 s of margin for 200 callers and the server sharing 2 cores.
    assert median_s < 1.0, median_s
    assert worst_s < 5.0, worst_s
    fault_table.append(FaultRow(
        "200 raw callers, default queues, 1 instance each", len(served) + len(rejected),
        len(rejected), note=f"rejected: median {median_s:.2f} s, worst {worst_s:.2f} s",
    ))  # fmt: skip


def test_a_lone_unavailable_on_a_quiet_server_is_retried(triton_server) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{sock.getsockname()[1]}"
    with Client([nobody, triton_server.grpc_url], timeout_s=30) as client:
        assert client.classify(COFFEE).top.label == "espresso"
        stats = client.retry_stats()
    assert stats.retries >= 1 and stats.refused == 0


@pytest.mark.parametrize("graceful", [True, False], ids=["stopped", "killed"])
def test_no_leftovers_and_stale_regions_are_removed(cpu_repository, graceful) -> None:
    """A graceful stop, and the kill the tests' own servers get (tvision/server/temporary.py),
    leave no region, work directory or process."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = SHM_DIR / f"{SHM_PREFIX}{dead.pid}_1_left-by-a-crash"
    stale.write_bytes(b"x")
    stale_dir = Path(tempfile.gettempdir()) / f"{WORK_DIR_PREFIX}{dead.pid}-left-by-a-crash"
    (stale_dir / "backends").mkdir(parents=True)
    server = TritonServer(cpu_repository, ServerPorts.free()).start()
    work_dir = server._work_dir
    # Their launcher is gone (SIGKILL gives it no chance to clean up): removed at this start.
    assert not stale.exists() and not stale_dir.exists()
    own = list(SHM_DIR.glob(f"{server.shm_prefix}*"))
    assert own  # this server's regions carry its prefix
    assert server.process is not None
    triton = psutil.Process(server.process.pid)
    group = [triton, *triton.children()]
    assert len(group) > 6  # Triton and its stubs (three models, two instances each)
    code = server.stop(graceful=graceful)
    assert (code == 0) if graceful else (code == -signal.SIGKILL)
    # A killed process may take a moment to be gone (and be reaped): 10 s is ample.
    _gone, alive = psutil.wait_procs(group, timeout=10)
    assert alive == []
    assert work_dir is not None and not work_dir.exists()
    assert not list(SHM_DIR.glob(f"{server.shm_prefix}*"))


def test_a_sigkilled_launchers_leftovers_are_removed_at_the_next_start(
    cpu_repository, tmp_path, monkeypatch
) -> None:
    """A real `tvision serve` and everything it started (Triton, its stubs, the edge) die by
    SIGKILL, as in an out-of-memory kill: nothing gets to clean up. Its python-backend
    regions and its work directory stay behind, until the next server starts. Other
    servers start on this machine meanwhile: the work directory lives in a TMPDIR of this
    test's own, and the launcher is reaped (its pid freed) only just before the next start,
    so that no other start removes the leftovers first."""
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    ports = ServerPorts.free()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tvision.cli", "serve", "--repository", str(cpu_repository),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
         "--metrics-port", str(ports.metrics)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "TMPDIR": str(private_tmp)},
    )  # fmt: skip
    try:
        served = _wait_for(
            lambda: _status(f"http://127.0.0.1:{ports.http}/v2/health/ready") == 200, 240
        )
        assert served is not None, "tvision serve did not become ready"
        regions = sorted(SHM_DIR.glob(f"{SHM_PREFIX}{launcher.pid}_*"))
        work_dirs = sorted(private_tmp.glob(f"{WORK_DIR_PREFIX}{launcher.pid}-*"))
        assert regions and len(work_dirs) == 1, (regions, work_dirs)
        started = psutil.Process(launcher.pid).children(recursive=True)
        assert any(process.name() == "tritonserver" for process in started)
        for process in started:  # first, so that none is told of the launcher's death
            process.kill()
        # Killed, not yet reaped: to every other process on this machine its pid still
        # looks alive, so no other server's start can remove its leftovers before ours.
        launcher.kill()
        _gone, alive = psutil.wait_procs(started, timeout=60)
        assert alive == []
        # The crash left them behind...
        assert all(region.exists() for region in regions)
        assert all(work_dir.exists() for work_dir in work_dirs)
    finally:
        launcher.kill()
        launcher.wait(timeout=60)  # its pid is gone now: what it left is stale
    # ...and the next start removes them.
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with temporary_server(cpu_repository) as server:
        assert not any(region.exists() for region in regions)
        assert not any(work_dir.exists() for work_dir in work_dirs)
        assert server.is_ready()


def test_a_server_starts_cleanly_from_a_process_running_grpc_threads(cpu_repository) -> None:
    script = f"""
import grpc, sys
from concurrent import futures
sys.path.insert(0, {str(ROOT)!r})
from tvision.server import ServerPorts, TritonServer
busy = grpc.server(futures.ThreadPoolExecutor(4))
busy.add_insecure_port("127.0.0.1:0")
busy.start()
channel = grpc.insecure_channel("127.0.0.1:1")
with TritonServer({str(cpu_repository)!r}, ServerPorts.free()) as server:
    print("ready", server.is_ready())
busy.stop(0)
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "ready True" in completed.stdout
    assert "Fatal Python error" not in completed.stderr
