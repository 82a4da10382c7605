"""The Kubernetes manifests as rendered: strict schemas, and what each overlay promises."""

from __future__ import annotations

from collections import defaultdict

import kubernetes_validate
import pytest

from tests.k8s.rendering import (
    AUTOSCALED,
    K8S_DIR,
    LOADTEST,
    OVERLAYS,
    by_kind,
    config_map_data,
    container_environment,
    one,
    render,
    triton_container,
)
from tvision import edge
from tvision.server import GRPC_KEEPALIVE_ARGS, restricted_api_args
from tvision_export.repository import ModelNames
from tvision_export.spec import DEFAULT_SPEC

# The oldest Kubernetes release the manifests support, and the newest schema shipped.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Custom resources have no schema in kubernetes-validate; they are checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("target", ["base", *OVERLAYS, LOADTEST])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_passes_strict_schema_validation(target, version) -> None:
    documents = render(target)
    assert documents
    for document in documents:
        if document["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("target", ["base", *OVERLAYS, LOADTEST])
def test_objects_carry_the_recommended_labels(target) -> None:
    for document in render(target):
        labels = document["metadata"]["labels"]
        for key in ("name", "component", "part-of", "version"):
            assert f"app.kubernetes.io/{key}" in labels, (document["kind"], key)


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_overlay_runs_the_one_serving_image(target) -> None:
    pod = one(render(target), "Deployment")["spec"]["template"]["spec"]
    containers = {container["name"]: container for container in pod["containers"]}
    assert set(containers) == {"triton", "edge"}
    triton = containers["triton"]
    assert triton["image"].endswith("/tvision/tritonserver:26.09-py3-tvision"), triton["image"]
    assert containers["edge"]["image"].startswith("docker.io/nginxinc/nginx-unprivileged:1.")
    dockerfile = K8S_DIR / "image" / "Dockerfile"
    base_image = next(
        line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM")
    )
    assert base_image.endswith(":26.09-py3"), "image tag and Dockerfile disagree"


@pytest.mark.parametrize("target", OVERLAYS)
def test_probes_ask_the_ensemble_and_are_sized(target) -> None:
    container = triton_container(render(target))
    ensemble = ModelNames.for_model(DEFAULT_SPEC.name).ensemble
    ready_path = f"/v2/models/{ensemble}/ready"
    assert container["startupProbe"]["httpGet"]["path"] == ready_path
    # Readiness runs tvision/readiness.py (tests/k8s/test_probe.py): the same path, asked
    # of Triton inside the pod, and the shared memory.
    readiness_url = next(
        arg for arg in container["readinessProbe"]["exec"]["command"] if arg.startswith("--url=")
    )
    assert readiness_url.endswith(f":{edge.K8S_EDGE_PORTS.triton_http}{ready_path}")
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # The default timeout (1 s) is shorter than a busy 2-core server takes to answer.
        assert container[probe].get("timeoutSeconds", 1) >= 3, probe
    startup = container["startupProbe"]
    # A download from object storage, a load and a warmup: the README promises 60 x 10 s
    # (10 minutes) on the cpu overlays; the gpu component's own test pins its 20 minutes.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_graceful_shutdown_fits_the_grace_period() -> None:
    documents = render("overlays/prod")
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    container = triton_container(documents)
    exit_timeout_s = next(
        int(arg.split("=", 1)[1]) for arg in container["args"] if arg.startswith("--exit-timeout")
    )
    pre_stop_s = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > exit_timeout_s + pre_stop_s
    assert "/dev/shm" in {mount["mountPath"] for mount in container["volumeMounts"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("target", OVERLAYS)
def test_admin_apis_are_restricted_with_the_key_from_a_secret(target) -> None:
    container = triton_container(render(target))
    # The same flags `tvision serve --admin-key-env` passes, with the key from the env.
    for flag in restricted_api_args("$(TVISION_ADMIN_KEY)"):
        assert flag in container["args"]
    (key,) = [v for v in container["env"] if v["name"] == "TVISION_ADMIN_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "tvision-admin", "key": "admin-key"}
    # Clients re-resolve and rebalance at least this often, and leave stopping pods.
    assert "--grpc-max-connection-age=300000" in container["args"]


@pytest.mark.parametrize("target", OVERLAYS)
def test_grpc_keepalive_permits_the_sdks_pings(target) -> None:
    """The launcher's keepalive flags, which permit a ping each second at least; the SDK
    pings every KEEPALIVE_TIME_MS. Triton's default (one each 5 minutes, 2 strikes) would
    close every SDK channel with GOAWAY "too_many_pings"."""
    from tvision_client import _core

    args = triton_container(render(target))["args"]
    keepalive = [arg for arg in args if arg.startswith(("--grpc-keepalive", "--grpc-http2"))]
    assert keepalive == list(GRPC_KEEPALIVE_ARGS)
    (interval,) = [arg for arg in args if "min-recv-ping-interval" in arg]
    assert int(interval.split("=")[1]) < _core.KEEPALIVE_TIME_MS
    assert "--grpc-http2-max-ping-strikes=0" in args


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_repository_arrives_by_itself(target) -> None:
    documents = render(target)
    container = triton_container(documents)
    assert "--model-repository=$(TVISION_MODEL_REPOSITORY)" in container["args"]
    (source,) = container["envFrom"]
    data = config_map_data(documents, source["configMapRef"]["name"])
    no_secrets: dict[str, str] = defaultdict(str)  # the Secrets' values do not matter here
    repository = container_environment(documents, container, no_secrets)["TVISION_MODEL_REPOSITORY"]
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    if repository.startswith("s3://"):
        names = {v["name"] for v in container["env"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
        assert "/snapshots/" in repository
    else:
        (init,) = pod["initContainers"]
        copied_from = container_environment(documents, init, no_secrets)["TVISION_SNAPSHOT_SOURCE"]
        # The overlay names the snapshot once; both containers' paths are made from it.
        overlay = (K8S_DIR / target / "kustomization.yaml").read_text()
        assert overlay.count(data["TVISION_SNAPSHOT_ID"]) == 1
        assert copied_from.startswith("s3://") and "/snapshots/" in copied_from
        assert copied_from.rsplit("/", 1)[1] == repository.rsplit("/", 1)[1]
        assert repository.rsplit("/", 1)[1] == data["TVISION_SNAPSHOT_ID"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert repository.startswith(mounts["/models"]["mountPath"] + "/")
        assert mounts["/models"]["readOnly"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        claim_name = volumes["model-repository"]["persistentVolumeClaim"]["claimName"]
        (claim,) = [
            d for d in by_kind(documents, "PersistentVolumeClaim")
            if d["metadata"]["name"] == claim_name
        ]  # fmt: skip
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert "/models" in {m["mountPath"] for m in init["volumeMounts"]}
    strategy = one(documents, "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("target", AUTOSCALED)
def test_autoscaled_overlays_leave_replicas_to_the_autoscaler(target) -> None:
    documents = render(target)
    assert "replicas" not in one(documents, "Deployment")["spec"]
    hpa = one(documents, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "tvision_queue_us_per_request"
    assert hpa["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("target", AUTOSCALED)
def test_the_autoscaler_targets_the_readmes_queue_time_between_its_pod_counts(target) -> None:
    """README: "The target is 20 ms per request, between 2 and 10 pods." The metric is in
    microseconds (`tvision_queue_us_per_request`), so 20 ms is an averageValue of 20000."""
    import re

    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    promise = re.search(r"The target is (\d+) ms per request, between (\d+) and (\d+) pods", readme)
    assert promise, "the README's scaling target sentence"
    target_ms, min_pods, max_pods = (int(group) for group in promise.groups())
    spec = one(render(target), "HorizontalPodAutoscaler")["spec"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"].endswith("_us_per_request")
    assert metric["pods"]["target"] == {
        "type": "AverageValue",
        "averageValue": str(target_ms * 1000),
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (min_pods, max_pods)


def test_prod_runs_on_gpus_with_monitoring() -> None:
    documents = render("overlays/prod")
    container = triton_container(documents)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    monitor = one(documents, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # kube-prometheus-stack selects by its release label.
    assert "release" in monitor["metadata"]["labels"]
    assert "release" in one(documents, "PrometheusRule")["metadata"]["labels"]


def test_dev_runs_one_cpu_replica_that_a_drain_does_not_evict() -> None:
    documents = render("overlays/dev")
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    container = triton_container(documents)
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    budget = one(documents, "PodDisruptionBudget")["spec"]
    assert budget.get("minAvailable") == 1 and "maxUnavailable" not in budget
    assert not by_kind(documents, "HorizontalPodAutoscaler")


def _readme_network_policy() -> tuple[dict[str, str], str]:
    """The client label and the monitoring namespace as the README's component table says."""
    import re

    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `networkpolicy` |")]
    label = re.search(r'labelled `([\w./-]+): "(\w+)"`', row)
    namespace = re.search(r"the `([\w-]+)` namespace", row)
    assert label and namespace, row
    return {label[1]: label[2]}, namespace[1]


@pytest.mark.parametrize("target", OVERLAYS)
def test_a_network_policy_admits_labelled_clients_and_monitoring(target) -> None:
    client_labels, monitoring = _readme_network_policy()
    documents = render(target)
    policy = one(documents, "NetworkPolicy")["spec"]
    selector = one(documents, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selector and selector
    assert "Ingress" in policy["policyTypes"]
    ports = [{port["port"] for port in rule["ports"]} for rule in policy["ingress"]]
    assert ports == [{"grpc", "http"}, {"metrics"}]
    clients, metrics = policy["ingress"]
    # gRPC/HTTP: only pods with exactly the README's label (any namespace); an empty
    # matchLabels, or a second peer, would admit every pod.
    (client_peer,) = clients["from"]
    assert client_peer["podSelector"]["matchLabels"] == client_labels
    assert client_peer.get("namespaceSelector", {}) == {}
    assert set(client_peer) <= {"podSelector", "namespaceSelector"}
    # metrics: every pod of the monitoring namespace (by its immutable name label), and the
    # load test's master in this namespace by its own label; no peer without a selector.
    namespace_peer, reader_peer = metrics["from"]
    assert namespace_peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": monitoring}}
    }
    assert set(reader_peer) == {"podSelector"}
    reader_labels = reader_peer["podSelector"]["matchLabels"]
    assert reader_labels and all(value == "true" for value in reader_labels.values())
    assert reader_labels.keys().isdisjoint(client_labels)
    # The in-cluster load test's pods carry the labels these rules admit.
    master = next(
        d for d in render(LOADTEST) if d["metadata"]["name"] == "tvision-loadtest-master"
        and d["kind"] == "Job"
    )["spec"]["template"]["metadata"]["labels"]  # fmt: skip
    assert client_labels.items() <= master.items()
    assert reader_labels.items() <= master.items()


def _edge(documents: list[dict]) -> dict:
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    (edge,) = [c for c in pod["containers"] if c["name"] == "edge"]
    return edge


def _edge_config(documents: list[dict]) -> str:
    """The nginx.conf of the ConfigMap the pod mounts (its hashed name)."""
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return config_map_data(documents, volumes["edge-config"]["configMap"]["name"])["nginx.conf"]


def test_grpc_tls_component_mounts_the_certificate_it_names() -> None:
    """TLS ends at the edge: its nginx.conf names files under the Secret's mount."""
    documents = render("overlays/onprem")
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    config = _edge_config(documents)
    assert "listen 0.0.0.0:8001 ssl http2;" in config
    files = [line.split()[1].rstrip(";") for line in config.splitlines()
             if line.strip().startswith(("ssl_certificate ", "ssl_certificate_key "))]  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in _edge(documents)["volumeMounts"]}
    assert all(path.startswith(mounts["grpc-tls"] + "/") for path in files) and len(files) == 2
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["grpc-tls"]["secret"]["secretName"] == "tvision-grpc-tls"
    assert not any("ssl" in arg for arg in triton_container(documents)["args"])


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_edge_config_is_what_tvision_edge_renders(target) -> None:
    """The pod's nginx.conf is tvision.edge's own output (`python -m tvision.edge k8s`
    rewrites the files), TLS for the overlays with the grpc-tls component."""
    documents = render(target)
    config = _edge_config(documents)
    tls = edge.K8S_CONFIGS["components/grpc-tls/edge-nginx.conf"]
    expected = {edge.k8s_config(None), edge.k8s_config(tls)}
    assert config in expected, "run `python -m tvision.edge k8s` after changing tvision/edge.py"
    for relative, shape in edge.K8S_CONFIGS.items():
        assert (K8S_DIR / relative).read_text() == edge.k8s_config(shape), relative


@pytest.mark.parametrize("target", OVERLAYS)
def test_clients_reach_triton_only_through_the_edge(target) -> None:
    documents = render(target)
    triton, front = triton_container(documents), _edge(documents)
    ports = edge.K8S_EDGE_PORTS
    for flag in ("--grpc-address=127.0.0.1", f"--grpc-port={ports.triton_grpc}",
                 "--http-address=127.0.0.1", f"--http-port={ports.triton_http}"):  # fmt: skip
        assert flag in triton["args"]
    named = {p["name"]: p["containerPort"] for p in front["ports"]}
    assert named == {"http": ports.http, "grpc": ports.grpc, "health": ports.health}
    assert [p["name"] for p in triton["ports"]] == ["metrics"]
    # Services and the NetworkPolicy name the edge's ports; the probes its health port.
    for service in by_kind(documents, "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in {"grpc", "http", "metrics"}
    for probe in ("startupProbe", "livenessProbe"):
        assert triton[probe]["httpGet"]["port"] == ports.health, probe
    # Readiness is a command in the pod (it reads /dev/shm), asking Triton on loopback.
    assert "httpGet" not in triton["readinessProbe"]
    assert front["command"][-1] == "/etc/tvision/edge/nginx.conf"
    mounts = {m["mountPath"] for m in front["volumeMounts"]}
    assert {"/etc/tvision/edge", "/tmp/edge"} <= mounts


def test_patches_address_containers_by_name() -> None:
    """A JSON patch on /containers/0 silently patches whichever container is first."""
    for kustomization in K8S_DIR.rglob("*.yaml"):
        assert "/containers/0" not in kustomization.read_text(), kustomization


def test_grpc_has_a_headless_service_for_client_side_balancing() -> None:
    services = {svc["metadata"]["name"]: svc for svc in by_kind(render("base"), "Service")}
    headless = services["tvision-triton-grpc"]
    assert headless["spec"]["clusterIP"] == "None"
    assert [port["name"] for port in headless["spec"]["ports"]] == ["grpc"]
    named = {port["name"] for port in services["tvision-triton"]["spec"]["ports"]}
    assert named == {"grpc", "http", "metrics"}


def _quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


@pytest.mark.parametrize("target", OVERLAYS)
def test_dev_shm_holds_the_python_backends_worst_case(target) -> None:
    """/dev/shm is sized from the limits: every python-backend instance handed its largest
    batch of the largest requests the edge admits (tvision.sizing), for the target the
    overlay serves; and the container's memory limit has room for it."""
    from tvision import sizing
    from tvision_export.options import ServingOptions

    documents = render(target)
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    serves = (
        "gpu" if "nvidia.com/gpu" in triton_container(documents)["resources"]["limits"] else "cpu"
    )
    options = ServingOptions(target=serves)
    plan = sizing.plan_for_options(
        options, edge.EdgeLimits().max_request_bytes, tensor_bytes=3 * 224 * 224 * 4,
        num_classes=1000,
    )  # fmt: skip
    volumes = {v["name"]: v for v in pod["volumes"]}
    shm = _quantity_bytes(volumes["dshm"]["emptyDir"]["sizeLimit"])
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert plan.total_bytes <= shm < plan.total_bytes * 1.5, (plan, shm)
    memory = _quantity_bytes(triton_container(documents)["resources"]["limits"]["memory"])
    assert memory >= shm + 8 * 2**30  # Triton, ONNX Runtime and the models besides


def test_prod_runs_the_flags_the_conformance_test_runs_on_triton() -> None:
    """tests/k8s/test_conformance.py runs the dev overlay's Triton flags (and onprem's,
    with TLS) on the real tritonserver; prod (a GPU overlay, not runnable here) must run
    exactly those flags, so that what was run is what prod serves with."""
    dev = triton_container(render("overlays/dev"))
    for overlay in ("overlays/prod", "overlays/onprem"):
        container = triton_container(render(overlay))
        assert container["command"] == dev["command"], overlay
        assert container["args"] == dev["args"], overlay
