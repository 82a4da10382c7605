"""The rendered dev Deployment's own command and flags, run on the real tritonserver.

Kubernetes is not on this machine, so the test does what the kubelet would do with the
container: it takes `command` and `args` as rendered, fills `$(VAR)` from the environment
the ConfigMaps and Secrets would give (the snapshot URI an operator sets, the Secrets'
values), and starts the embedded Triton 2.51 with exactly those flags. Only placement is
the launcher's: the python backend's directory, and loopback addresses on free ports
instead of the container's 8000-8002. The repository is a snapshot in a real S3-compatible
store (moto's server on loopback), read natively by Triton as in the cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient

from tests.helpers import ADMIN_HTTP_ENDPOINTS, http_status
from tests.k8s.rendering import (
    config_map_data,
    container_environment,
    expand,
    one,
    render,
    triton_container,
)
from tvision import edge
from tvision.edge import Edge, EdgeLimits, EdgePorts
from tvision.server import (
    ADMIN_APIS,
    ADMIN_KEY_HEADER,
    GRPC_ADMIN_KEY_HEADER,
    ServerError,
    ServerPorts,
    TritonServer,
    free_ports,
)
from tvision.server.binary import EXEC_WRAPPER
from tvision_client import Client
from tvision_export import snapshots
from tvision_export.samples import sample_photo

pytestmark = pytest.mark.e2e

ADMIN_KEY = "tvision-conformance-admin-key"


def _rendered_dev() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    documents = render("overlays/dev")
    return documents, triton_container(documents)


class PodServer:
    """The pod's two containers as rendered: Triton with the triton container's flags, and
    nginx with the edge container's nginx.conf from its ConfigMap, their ports (and the TLS
    Secret's mount) remapped to free loopback ports and local files."""

    def __init__(self, documents: list[dict[str, Any]], triton: TritonServer, tls_dir: str = ""):
        self.triton = triton
        self.ports = ServerPorts.free()
        (self.health_port,) = free_ports(1)
        pod = one(documents, "Deployment")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        name = volumes["edge-config"]["configMap"]["name"]
        self.config = config_map_data(documents, name)["nginx.conf"]
        self.tls_dir = tls_dir
        self.edge: Edge | None = None
        self.work: Path | None = None

    def start(self, ready_timeout_s: float = 240.0, heal: bool = False) -> PodServer:
        pod_ports = edge.K8S_EDGE_PORTS
        # No launcher runs in the pod: a model that fails to load ends Triton by its own exit.
        self.triton.start(ready_timeout_s=ready_timeout_s, heal=heal, fail_fast=False)
        try:
            self.work = work = Path(tempfile.mkdtemp(prefix="tvision-conformance-edge-"))
            replacements = {
                f"0.0.0.0:{pod_ports.grpc}": f"127.0.0.1:{self.ports.grpc}",
                f"0.0.0.0:{pod_ports.http}": f"127.0.0.1:{self.ports.http}",
                f"0.0.0.0:{pod_ports.health}": f"127.0.0.1:{self.health_port}",
                f"127.0.0.1:{pod_ports.triton_grpc}": f"127.0.0.1:{self.triton.ports.grpc}",
                f"127.0.0.1:{pod_ports.triton_http}": f"127.0.0.1:{self.triton.ports.http}",
                "/tmp/edge": str(work),
                str(edge.K8S_TLS_DIR): self.tls_dir or str(edge.K8S_TLS_DIR),
            }
            config = self.config
            for pod_value, local in replacements.items():
                assert pod_value in config or pod_value.startswith("/etc"), pod_value
                config = config.replace(pod_value, local)
            if os.geteuid() == 0:  # as the kubelet's non-root user would: one that can write
                config = config.replace("# user: as started", "user root;")
            pod_edge = EdgePorts(self.ports.grpc, self.ports.http, 0, 0, self.health_port)
            self.edge = Edge(EdgeLimits(), pod_edge, work)
            self.edge.start(EXEC_WRAPPER, config=config)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def process(self) -> Any:
        return self.triton.process

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def probe_url(self, port: int) -> str:
        assert port == edge.K8S_EDGE_PORTS.health, "probes ask the edge's health port"
        return f"http://127.0.0.1:{self.health_port}"

    def stop(self) -> None:
        if self.edge is not None:
            self.edge.stop()
            self.edge = None
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None
        self.triton.stop(graceful=False)  # a pod's graceful stop is not what these check


def _server_for(repository: str) -> PodServer:
    """The rendered dev pod: Triton with its container's command, args and env, behind
    the edge container's nginx.conf."""
    documents, container = _rendered_dev()
    assert container["command"] == ["tritonserver"]
    secrets = {
        "tvision-admin/admin-key": ADMIN_KEY,
        "tvision-object-store/access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
        "tvision-object-store/secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    environment = container_environment(documents, container, secrets)
    # The operator's one edit: the snapshot `tvision repo push` printed.
    environment["TVISION_MODEL_REPOSITORY"] = repository
    args = [expand(arg, environment) for arg in container["args"]]
    unexpanded = [arg for arg in args if "$(" in arg]
    assert not unexpanded, f"args refer to variables the container does not have: {unexpanded}"
    triton = TritonServer(
        repository, ServerPorts.free(), serving_args=args, environment=environment, edge=None
    )
    return PodServer(documents, triton)


def _probe(server: PodServer, probe: dict[str, Any], documents: list[dict] | None = None) -> int:
    """The status an httpGet probe would see (the kubelet counts 200-399 as success); for
    an exec probe, 200 when its command exits 0 and 503 otherwise."""
    if "exec" in probe:
        return 200 if exec_probe(server, probe, documents or render("overlays/dev")) == 0 else 503
    get = probe["httpGet"]
    request = urllib.request.Request(f"{server.probe_url(get['port'])}{get['path']}")
    try:
        with urllib.request.urlopen(request, timeout=probe.get("timeoutSeconds", 1)) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def exec_probe(
    server: PodServer, probe: dict[str, Any], documents: list[dict], wrap: list[str] | None = None
) -> int:
    """Run an exec probe's command as the kubelet would in the triton container: the
    script from the ConfigMap its volume mounts, Triton's HTTP port remapped to the local
    server's, and the local server's shared-memory region names (the pod's are Triton's
    default). Returns the exit status; the reason is printed, for the test's log."""
    import subprocess
    import sys

    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in triton_container(documents)["volumeMounts"] if m["name"] == "probe"]
    scripts = config_map_data(documents, volumes["probe"]["configMap"]["name"])
    command = list(probe["exec"]["command"])
    assert command[0] == "python3", command
    with tempfile.TemporaryDirectory(prefix="tvision-probe-") as here:
        for name, text in scripts.items():
            (Path(here) / name).write_text(text)
        local = [
            arg.replace(mount["mountPath"], here).replace(
                f"127.0.0.1:{edge.K8S_EDGE_PORTS.triton_http}",
                f"127.0.0.1:{server.triton.ports.http}",
            )
            for arg in command[1:]
        ]
        local += [f"--shm-prefix={server.triton.shm_prefix}"]
        done = subprocess.run(
            [*(wrap or []), sys.executable, *local], capture_output=True, text=True, check=False,
            timeout=probe.get("timeoutSeconds", 1) + 5,
        )  # fmt: skip
    print(done.stderr)
    return done.returncode


def _http(server: PodServer, method: str, path: str, headers: dict[str, str]) -> int:
    return http_status(server.http_url, method, path, headers)


@pytest.fixture(scope="module")
def snapshot_uri(s3_endpoint: str, cpu_repository: Path) -> str:
    root = snapshots.StoreLocation("conformance", "efficientnet_lite0", s3_endpoint)
    fs = snapshots.filesystem(root)
    if not fs.exists("conformance"):
        fs.mkdir("conformance")
    result = snapshots.push(cpu_repository, root)
    return result.location.triton_uri()


@pytest.fixture(scope="module")
def dev_server(snapshot_uri: str) -> Iterator[PodServer]:
    server = _server_for(snapshot_uri)
    server.start(heal=False)  # no launcher watchdog: the cluster has none either
    try:
        yield server
    finally:
        server.stop()


def test_every_probe_passes_on_a_server_that_can_serve(dev_server) -> None:
    _, container = _rendered_dev()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _probe(dev_server, container[probe]) == 200, probe


def test_readiness_fails_where_dev_shm_cannot_hold_the_plan(dev_server) -> None:
    """The same server, its readiness probe run where /dev/shm is a 96 MiB tmpfs (a mount
    namespace of the test's own, gone with the probe): not ready, though the ensemble is.
    The pod's own 2Gi (cpu) holds the 1.47 GiB plan, so the probe above passed."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /dev/shm")
    documents, container = _rendered_dev()
    small = [
        "unshare", "--mount", "sh", "-c",
        'mount -t tmpfs -o size=96m tmpfs /dev/shm && exec "$@"', "probe",
    ]  # fmt: skip
    assert _probe(dev_server, container["readinessProbe"], documents) == 200
    assert exec_probe(dev_server, container["readinessProbe"], documents, wrap=small) == 1


def test_inference_health_metadata_and_config_stay_open(dev_server) -> None:
    with Client(dev_server.grpc_url, timeout_s=60) as client:
        result = client.classify(sample_photo("coffee").path.read_bytes())
        assert result.top.label == "espresso"
        # The SDK reads the model config for its limits: that stays open.
        assert client.model_info().max_batch_size > 0
    assert _http(dev_server, "GET", "/v2/models/efficientnet_lite0/config", {}) == 200
    assert _http(dev_server, "GET", "/v2/models/efficientnet_lite0", {}) == 200


@pytest.mark.parametrize("api", ADMIN_APIS)
def test_admin_apis_answer_403_without_the_key_and_200_with_it(dev_server, api) -> None:
    method, path = ADMIN_HTTP_ENDPOINTS[api]
    assert _http(dev_server, method, path, {}) == 403
    assert _http(dev_server, method, path, {ADMIN_KEY_HEADER: "wrong-key"}) == 403
    assert _http(dev_server, method, path, {ADMIN_KEY_HEADER: ADMIN_KEY}) == 200


# One gRPC call per restricted protocol (tvision.server.ADMIN_APIS), and what it answers.
ADMIN_GRPC_CALLS = {
    "model-repository": lambda client, headers: (
        client.get_model_repository_index(headers=headers).models
    ),
    "shared-memory": lambda client, headers: (
        client.get_system_shared_memory_status(headers=headers) is not None
    ),
    "statistics": lambda client, headers: (
        client.get_inference_statistics(headers=headers).model_stats
    ),
    "trace": lambda client, headers: client.get_trace_settings(headers=headers).settings,
    "logging": lambda client, headers: client.get_log_settings(headers=headers).settings,
}


def test_every_admin_api_has_a_grpc_call() -> None:
    assert set(ADMIN_GRPC_CALLS) == set(ADMIN_APIS)


@pytest.mark.parametrize("api", ADMIN_APIS)
def test_admin_protocols_are_restricted_over_grpc_too(dev_server, api) -> None:
    call = ADMIN_GRPC_CALLS[api]
    client = grpcclient.InferenceServerClient(dev_server.grpc_url)
    try:
        with pytest.raises(Exception, match="restricted"):
            call(client, None)
        with pytest.raises(Exception, match="restricted"):
            call(client, {GRPC_ADMIN_KEY_HEADER: "wrong-key"})
        assert call(client, {GRPC_ADMIN_KEY_HEADER: ADMIN_KEY})
        if api == "shared-memory":
            # Registering shared memory (the CVE-2025-23319 chain's first step) is refused.
            with pytest.raises(Exception, match="restricted"):
                client.register_system_shared_memory("probe", "/probe", 64)
    finally:
        client.close()


def test_an_empty_repository_never_goes_ready(s3_endpoint, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _, container = _rendered_dev()
    server = _server_for(str(empty))
    try:
        # The launcher waits for /v2/health/ready, which an empty server answers 200...
        server.start(ready_timeout_s=120, heal=False)
        # ...while the rendered startup and readiness probes ask the ensemble: not ready.
        for probe in ("startupProbe", "readinessProbe"):
            assert _probe(server, container[probe]) >= 400, probe
        assert _probe(server, container["livenessProbe"]) == 200  # alive, so not restarted
    finally:
        server.stop()


def test_a_broken_repository_never_goes_ready(s3_endpoint, cpu_repository, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(cpu_repository, broken)
    (model,) = broken.glob("*_classifier/1/model.onnx")
    model.write_bytes(model.read_bytes()[:1000])  # a truncated upload
    import re
    import time

    server = _server_for(str(broken))
    ready_timeout_s = 180
    started = time.monotonic()
    with pytest.raises(ServerError) as raised:
        server.start(ready_timeout_s=ready_timeout_s, heal=False)
    failed_after_s = time.monotonic() - started
    # Triton gives up (the pod restarts, CrashLoopBackOff) instead of serving without it:
    # the process exits non-zero, naming the classifier, long before readiness would have
    # timed out (a server that hung not ready would fail only at ready_timeout_s; half of it
    # is the margin for a loaded machine, where the exit comes within seconds).
    message = str(raised.value)
    exited = re.search(r"tritonserver exited with code (-?\d+) before it was ready", message)
    assert exited, message
    assert int(exited[1]) != 0
    assert "classifier" in message
    assert failed_after_s < ready_timeout_s / 2, failed_after_s


def test_the_onprem_overlays_grpc_tls_serves_the_sdks_tls_client(cpu_repository, tmp_path):
    """The onprem Deployment (model-from-pvc, grpc-tls) as rendered, with its volume paths
    remapped: the copied snapshot to a local repository, the Secret's certificate files to
    ones issued here. The SDK connects with TLSConfig; a plaintext client cannot."""
    import trustme

    from tvision_client import ClientError, RetryPolicy, TLSConfig

    documents = render("overlays/onprem")
    container = triton_container(documents)
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    secret_dir = tmp_path / "grpc-tls"
    secret_dir.mkdir()
    issued.cert_chain_pems[0].write_to_path(secret_dir / "tls.crt")
    issued.private_key_pem.write_to_path(secret_dir / "tls.key")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {"tvision-admin/admin-key": ADMIN_KEY}
    environment = container_environment(documents, container, secrets)
    repository = environment["TVISION_MODEL_REPOSITORY"]
    assert repository.startswith(mounts["model-repository"] + "/")
    environment["TVISION_MODEL_REPOSITORY"] = str(cpu_repository)  # the volume's copy
    args = [expand(arg, environment) for arg in container["args"]]
    triton = TritonServer(
        cpu_repository, ServerPorts.free(), serving_args=args, environment=environment, edge=None
    )
    server = PodServer(documents, triton, tls_dir=str(secret_dir)).start()
    try:
        tls = TLSConfig(root_certificates=authority.cert_pem.bytes())
        with Client(server.grpc_url, tls=tls, timeout_s=60) as client:
            assert client.classify(sample_photo("coffee").path.read_bytes()).top.label == (
                "espresso"
            )
        with Client(server.grpc_url, retry=RetryPolicy(max_attempts=1), timeout_s=5) as plain:
            with pytest.raises(ClientError):
                plain.classify(sample_photo("coffee").path.read_bytes())
    finally:
        server.stop()
