"""Closed by default: a server the launcher starts with no flag at all keeps its admin APIs
(model control, shared memory, statistics, trace, logging) behind a key made for that
start, on HTTP and gRPC, on loopback too.

The attack it stops is real and is sent here as a browser would send it: a "simple" CORS
request (``Content-Type: text/plain``, an ``Origin``, no preflight) that asks model control
to load a python model whose code rides in the request. Against a server started with
``open_admin_apis=True`` (the control) the same request runs that code; against the default
server it answers 403 and runs nothing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.helpers import ADMIN_HTTP_ENDPOINTS, http_status
from tvision.server import (
    ADMIN_APIS,
    ADMIN_KEY_HEADER,
    SHM_DIR,
    ServerError,
    ServerPorts,
    TritonServer,
    temporary_server,
)

pytestmark = pytest.mark.e2e

# A python model whose initialize() writes a file: proof that code sent over HTTP ran.
_PAYLOAD = """
import pathlib
class TritonPythonModel:
    def initialize(self, args):
        pathlib.Path({marker!r}).write_text("ran")
    def execute(self, requests):
        return []
"""


def _code_loading_request(marker: Path) -> tuple[bytes, dict[str, str]]:
    """The load request a web page could send to 127.0.0.1 without a CORS preflight."""
    config = {
        "name": "pwned",
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [1]}],
    }
    code = _PAYLOAD.format(marker=str(marker)).encode()
    body = {
        "parameters": {
            "config": json.dumps(config),
            "file:1/model.py": base64.b64encode(code).decode(),
        }
    }
    headers = {"Content-Type": "text/plain", "Origin": "http://attacker.example"}
    return json.dumps(body).encode(), headers


@pytest.mark.parametrize("api", ADMIN_APIS)
def test_every_admin_api_answers_403_without_the_launchers_key(triton_server, api) -> None:
    method, path = ADMIN_HTTP_ENDPOINTS[api]
    base = triton_server.http_url
    assert http_status(base, method, path) == 403
    assert http_status(base, method, path, {ADMIN_KEY_HEADER: "a-guessed-key-0123456789"}) == 403
    # The launcher itself (its watchdog, the benchmark's statistics) holds the key.
    assert http_status(base, method, path, triton_server.admin_headers) == 200


def test_inference_health_metadata_and_config_stay_open(triton_server) -> None:
    base = triton_server.http_url
    for path in (
        "/v2/health/ready",
        "/v2/models/efficientnet_lite0",
        "/v2/models/efficientnet_lite0/config",
    ):
        assert http_status(base, "GET", path) == 200, path


def test_grpc_admin_calls_and_shared_memory_registration_are_refused(triton_server) -> None:
    """The first step of the CVE-2025-23319/23320/23334 chain: registering the python
    backend's own region. Refused without the key, and the server keeps serving."""
    (own_region, *_) = sorted(SHM_DIR.glob(f"{triton_server.shm_prefix}*"))
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        for call in (
            client.get_model_repository_index,
            client.get_inference_statistics,
            client.get_trace_settings,
            client.get_log_settings,
            lambda: client.register_system_shared_memory("own", f"/{own_region.name}", 64),
            lambda: client.load_model("pwned"),
        ):
            with pytest.raises(Exception, match="restricted"):
                call()
        assert client.get_model_repository_index(headers=triton_server.admin_grpc_headers).models
        assert client.is_model_ready("efficientnet_lite0")
    finally:
        client.close()


def test_a_browser_style_code_loading_request_runs_nothing(triton_server, tmp_path) -> None:
    marker = tmp_path / "ran-on-the-default-server"
    body, headers = _code_loading_request(marker)
    status = http_status(
        triton_server.http_url, "POST", "/v2/repository/models/pwned/load", headers, body
    )
    assert status == 403
    assert not marker.exists()
    assert http_status(triton_server.http_url, "GET", "/v2/models/pwned/ready") != 200


def test_control_the_same_request_runs_its_code_on_a_server_left_open(tmp_path) -> None:
    """Proves the payload is real: with the admin APIs open, the request above runs code.
    An empty repository keeps this server quick to start."""
    repository = tmp_path / "empty_repository"
    repository.mkdir()
    marker = tmp_path / "ran-on-the-open-server"
    body, headers = _code_loading_request(marker)
    with temporary_server(repository, open_admin_apis=True) as server:
        status = http_status(
            server.http_url, "POST", "/v2/repository/models/pwned/load", headers, body
        )
        assert status == 200
        assert marker.read_text() == "ran"


def test_open_admin_apis_are_refused_on_an_address_other_machines_reach(tmp_path) -> None:
    for address in ("0.0.0.0", "192.0.2.10", "::"):
        with pytest.raises(ServerError, match="refusing to serve"):
            TritonServer(tmp_path, ServerPorts.free(), address=address, open_admin_apis=True)
    with pytest.raises(ServerError, match="at least 16 characters"):
        TritonServer(tmp_path, ServerPorts.free(), admin_key="short")
