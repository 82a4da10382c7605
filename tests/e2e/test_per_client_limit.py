"""The edge's per-client cap (EdgeLimits.max_requests_per_client), from real addresses: one
server, a flood of large-image gRPC calls from one address (the host's loopback) and a good
client in a network namespace of the test's own (tests/e2e/netns.py), behind a veth pair,
so that nginx sees two client addresses.

- The flood gets UNAVAILABLE, naming the per-client limit, for every call beyond the cap,
  and the good client's calls all succeed, each within GOOD_CALL_BOUND_S.
- A client drip-feeding HTTP bodies a byte a second holds at most the cap's requests from
  its address (on both ports: the cap is per address, not per port); more are refused at
  once.

The flood's callers each have a connection of their own. On one shared HTTP/2 connection,
the refused calls' bodies (which nginx reads and discards) soon outweigh the admitted
calls' 8 to 1, nginx's "http2 flood detected" closes the connection, and the admitted calls
on it go on in Triton, which does not cancel them: the queues then filled all the same
(1,303 calls refused by a full queue in 16 s). Not what the cap can bound; known, not
tested here.

The namespace, its veth pair and every process in it are removed when the test ends,
passed or failed. Skipped only where the kernel or our permissions refuse a namespace.
"""

from __future__ import annotations

import io
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2_grpc

from tests.e2e import netns
from tests.helpers import ROOT
from tvision.bench.edge import infer_request
from tvision.edge import EdgeLimits
from tvision.server import TritonServer, temporary_server
from tvision_client import Client, ClientError
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e

COFFEE = sample_photo("coffee").path.read_bytes()
CAP = EdgeLimits().max_requests_per_client
FLOOD_CALLERS, FLOOD_S, LARGE_SIZE = 200, 16.0, (1920, 1080)
GOOD_START_S, GOOD_FOR_S = 2.0, 12.0  # the good client classifies within the flood
# The good client's request is never refused by a full queue (the flood holds at most
# CAP = 16 of the door's 64 places, and of each queue's behind it) and waits behind at
# most CAP of the flood's requests: one round of the CPU export's batches (2 preprocessing
# instances x 8), about 0.7 s of 1920x1080 images (85 ms each alone). On 2 cores shared
# with the flood's refusals (a thousand a second, nginx reading up to 256 KiB of each
# before it answers) that round can outlast the 1 s queue timeout, and the SDK retries
# once with backoff. So the bound: two queue timeouts, the backoff and 1 s of margin, 4 s.
# Measured: at most 3.3 s in four runs. No timing control: without the cap (1,024) the
# good client's worst call was 4.0 s in one run, too close to the bound to be reliable on
# this shared machine; the count that tells them apart is the flood's calls refused by
# full queues: none with the cap (by construction), 4,280 without it.
GOOD_CALL_BOUND_S = 4.0
DRIP_EXTRA = 8
REFUSED_AT_ONCE_S = 1.0

# Inside the namespace: classify with the SDK (its retries included, as a real client's),
# one call after another for argv[4] seconds after waiting argv[3]; print each call's
# seconds and label, or its error.
GOOD_CLIENT_SCRIPT = """
import json, sys, time
from tvision_client import Client
from tvision_export.samples import sample_photo
image = sample_photo("coffee").path.read_bytes()
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
stop_at = time.monotonic() + float(sys.argv[4])
with Client(sys.argv[2], timeout_s=30) as client:
    while time.monotonic() < stop_at:
        started = time.monotonic()
        try:
            label = client.classify(image).top.label
            print("call", json.dumps([time.monotonic() - started, label]), flush=True)
        except Exception as exc:
            print("call", json.dumps([time.monotonic() - started, repr(exc)]), flush=True)
        time.sleep(0.2)
"""


def _large_photo() -> bytes:
    """A real photo at LARGE_SIZE, as JPEG."""
    photo = Image.open(io.BytesIO(COFFEE)).convert("RGB").resize(LARGE_SIZE)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def namespace() -> Iterator[netns.Namespace]:
    netns.remove_stale()
    (space,) = netns.namespaces(1)
    try:
        space.create()
    except netns.NetnsError as exc:
        space.delete()
        pytest.skip(f"no network namespace here: {exc}")
    try:
        yield space
    finally:
        space.delete()
        assert netns.leftovers([space.name]) == []


@pytest.fixture(scope="module")
def server(cpu_repository: Path) -> Iterator[TritonServer]:
    """One server on every address: the flood reaches it on loopback, the good client on
    the host's end of the namespace's veth pair."""
    with temporary_server(cpu_repository, address="0.0.0.0") as started:
        yield started


# The flood, in a process of its own at the lowest CPU priority (nice 19): a real flood's
# client runs on another machine, and on these 2 cores its own CPU (about half a core
# spinning on refusals) would otherwise be taken from the server, not the cap measured.
# FLOOD_CALLERS raw gRPC callers (no SDK: no retries, no backoff) sending the image back
# to back for FLOOD_S; it prints its outcomes: OK, the edge's refusal, a full queue's,
# others by message.
FLOOD_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
import grpc
from tritonclient.grpc import service_pb2_grpc
from tvision.bench.edge import infer_request
url, image, callers, seconds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = infer_request(image.read_bytes())
outcomes = {}
async def caller(index, stop_at):
    # One connection each: ("grpc.channel_id") keeps channels from sharing a subchannel.
    options = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.channel_id", index)]
    async with grpc.aio.insecure_channel(url, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        loop = asyncio.get_running_loop()
        while loop.time() < stop_at:
            try:
                await stub.ModelInfer(request, timeout=60)
                key = "OK"
            except grpc.aio.AioRpcError as exc:
                key = f"{exc.code().name}: {exc.details()[:60]}"
                if exc.code() == grpc.StatusCode.UNAVAILABLE and "one client" in key:
                    key = "edge refused"
                elif "queue size" in exc.details():
                    key = "queue full"
            outcomes[key] = outcomes.get(key, 0) + 1
async def flood():
    stop_at = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(caller(index, stop_at) for index in range(callers)))
asyncio.run(flood())
print(json.dumps(outcomes), flush=True)
"""


def _flood(url: str, image: bytes, work: Path) -> dict[str, int]:
    (work / "large.jpg").write_bytes(image)
    completed = subprocess.run(
        ["nice", "-n", "19", sys.executable, "-c", FLOOD_SCRIPT, url, str(work / "large.jpg"),
         str(FLOOD_CALLERS), str(FLOOD_S)],
        capture_output=True, text=True, timeout=FLOOD_S + 90, cwd=ROOT, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.splitlines()[-1])


def test_a_flood_from_one_address_leaves_another_clients_latency_bounded(
    server, namespace, tmp_path
) -> None:
    with Client(server.grpc_url, timeout_s=60) as client:  # warm: models loaded, batchers run
        assert client.classify(_large_photo()).top.label
    good_url = f"{namespace.host_address}:{server.ports.grpc}"
    good = netns.InNamespace(
        namespace, GOOD_CLIENT_SCRIPT, [good_url, str(GOOD_START_S), str(GOOD_FOR_S)],
        tmp_path / "good-client.log",
    )  # fmt: skip
    try:
        good.wait_ready(60)
        outcomes = _flood(server.grpc_url, _large_photo(), tmp_path)
        good.process.wait(timeout=60)
    finally:
        good.stop(timeout_s=5)
    lines = [line for line in good.log_path.read_text().splitlines() if line.startswith("call")]
    calls = [json.loads(line.split(" ", 1)[1]) for line in lines]
    print(f"flood outcomes: {outcomes}; good client's calls (s): {[round(c[0], 2) for c in calls]}")
    # (a) The flood held at most CAP requests: the rest were refused by the edge, counted.
    assert outcomes.get("edge refused", 0) >= FLOOD_CALLERS - CAP, outcomes
    assert outcomes.get("OK", 0) > 0, outcomes
    # ... so Triton's queues were never full: no call of the flood's was refused by one.
    assert outcomes.get("queue full", 0) == 0, outcomes
    # (b) The good client, from another address: every call served, each within the bound.
    assert len(calls) >= 4, good.log_path.read_text()[-3000:]
    assert all(label == "espresso" for _, label in calls), calls
    assert max(seconds for seconds, _ in calls) <= GOOD_CALL_BOUND_S, calls
    assert server.is_ready()


def _dripping_request(port: int) -> socket.socket:
    """An HTTP inference request whose headers announce a 1 MB body, and its first byte."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST /v2/models/{DEFAULT_SPEC.name}/infer HTTP/1.1\r\nHost: edge\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n{".encode()
    )
    return sock


def test_a_client_drip_feeding_bodies_holds_at_most_the_cap(server) -> None:
    port = server.ports.http
    held = [_dripping_request(port) for _ in range(CAP)]
    stop = threading.Event()

    def drip() -> None:  # a byte a second on each: within nginx's 10 s between reads
        while not stop.wait(1.0):
            for sock in held:
                sock.sendall(b" ")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(1.0)  # nginx has read every held request's headers and counts it
        refused_s = []
        for _ in range(DRIP_EXTRA):
            started = time.monotonic()
            with _dripping_request(port) as extra:
                extra.settimeout(REFUSED_AT_ONCE_S + 2)  # held, not refused: a timeout
                reply = extra.recv(4096).decode(errors="replace")
            refused_s.append(time.monotonic() - started)
            assert reply.startswith("HTTP/1.1 503"), reply
            assert f"limit of {CAP} requests in progress from one client address" in reply
        # The cap is the address's, on both ports: a gRPC call from it is refused too, as
        # UNAVAILABLE (the SDK retries it with backoff) with the limit named.
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(infer_request(COFFEE), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"limit of {CAP} requests" in refused.value.details()
        time.sleep(2.0)
        # Every held request is still held: nginx answered none of them (nor closed one).
        readable, _, _ = select.select(held, [], [], 0)
        assert readable == [], "a dripping request was answered or closed"
    finally:
        stop.set()
        dripper.join(timeout=5)
        for sock in held:
            sock.close()
    print(f"{CAP} held; {DRIP_EXTRA} more refused in {max(refused_s):.3f} s at most")
    assert max(refused_s) <= REFUSED_AT_ONCE_S, refused_s
    # Closed, the held requests free the address's slots: it is served again.
    deadline = time.monotonic() + 10
    with Client(server.grpc_url, timeout_s=10) as client:
        while True:
            try:
                assert client.classify(COFFEE).top.label == "espresso"
                break
            except ClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def test_the_cap_is_on_both_client_ports_and_not_on_the_health_port() -> None:
    from tvision.edge import EdgePorts, render_config

    with pytest.raises(ValueError, match="max_requests_per_client"):
        EdgeLimits(max_requests_per_client=0)
    ports = EdgePorts(grpc=1, http=2, triton_grpc=3, triton_http=4, health=5)
    text = render_config(EdgeLimits(max_requests_per_client=7), ports, address="0.0.0.0",
                         work_dir="/tmp/edge")  # fmt: skip
    servers = text.split("    server {")[1:]
    assert [server.count("limit_conn per_client 7;") for server in servers] == [1, 1, 0]
    assert "add_header grpc-status 14 always;" in servers[0]
