"""``tvision gpu-check`` cannot run here (no GPU); what it calls is tested on the CPU: the
refusal, the Docker command it would run, and the benchmark paths against a server it did
not start (the session's CPU server), rendered as it renders them."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import run_tvision
from tvision.bench.images import bench_images
from tvision.bench.paths import BenchPaths
from tvision.gpu_check import (
    GpuCheckError,
    GpuCheckReport,
    RemoteServer,
    docker_command,
    render_gpu_check,
    start_container,
)
from tvision.server import ADMIN_APIS, ADMIN_KEY_HEADER
from tvision_export import configs
from tvision_export.options import ServingOptions
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e


def test_without_a_gpu_the_check_fails_loudly_and_does_not_skip() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the no-GPU refusal cannot be produced here")
    completed = run_tvision("gpu-check", timeout_s=120)
    assert completed.returncode == 2
    assert "GPU CHECK FAILED: no GPU here" in completed.stderr


def test_the_docker_command_serves_the_export_on_all_gpus_on_loopback(tmp_path) -> None:
    repository = tmp_path / "model_repository"
    key = "gpu-check-admin-key-0123456789"
    command = docker_command("img:tag", repository, "name", (1, 2, 3), key)
    assert command[command.index("--gpus") + 1] == "all"
    published = [command[i + 1] for i, arg in enumerate(command) if arg == "-p"]
    assert published == ["127.0.0.1:1:8001", "127.0.0.1:2:8000", "127.0.0.1:3:8002"]
    volumes = [command[i + 1] for i, arg in enumerate(command) if arg == "-v"]
    assert f"{repository.resolve()}:/models:ro" in volumes
    # The engine cache is mounted where the gpu target's config points TensorRT.
    assert any(volume.endswith(f":{configs.TENSORRT_CACHE_DIR}") for volume in volumes)
    assert command[command.index("img:tag") + 1 :][:2] == [
        "tritonserver", "--model-repository=/models",
    ]  # fmt: skip
    # Closed by default there too: every admin API behind the run's own key.
    restricted = [arg for arg in command if arg.startswith("--http-restricted-api=")]
    assert restricted == [f"--http-restricted-api={','.join(ADMIN_APIS)}:{ADMIN_KEY_HEADER}={key}"]
    assert any(arg.startswith("--grpc-restricted-protocol=") for arg in command)


def test_a_container_docker_cannot_start_is_a_gpu_check_error(tmp_path) -> None:
    """A real failure: ``docker run`` of an image that exists nowhere (and here with no
    daemon running either) exits non-zero; the check says what docker said, it does not
    end in a CalledProcessError traceback."""
    if not shutil.which("docker"):
        pytest.skip("no docker client here: the missing-client case below covers it")
    command = docker_command(
        "tvision-no-such-image.invalid/none:0", tmp_path / "model_repository",
        "tvision-test-no-such-container", (1, 2, 3), "gpu-check-admin-key-0123456789",
    )  # fmt: skip
    with pytest.raises(GpuCheckError, match="docker run exited with code") as raised:
        start_container(command)
    assert "(nothing on stderr)" not in str(raised.value)  # docker's own words follow


def test_a_missing_docker_client_is_a_gpu_check_error(tmp_path, monkeypatch) -> None:
    """Docker absent for real: a PATH that holds no docker."""
    monkeypatch.setenv("PATH", str(tmp_path))
    command = docker_command("img:tag", tmp_path / "model_repository", "n", (1, 2, 3), "k" * 16)
    with pytest.raises(GpuCheckError, match="docker is not installed"):
        start_container(command)


def test_the_paths_it_measures_run_against_a_server_it_did_not_start(
    triton_server, cpu_export
) -> None:
    remote = RemoteServer(
        triton_server.grpc_url,
        triton_server.http_url,
        admin_grpc_headers=triton_server.admin_grpc_headers,
    )
    remote.wait_until_ready(DEFAULT_SPEC.name, timeout_s=30)
    bench = BenchPaths(remote, DEFAULT_SPEC, ServingOptions(), bench_images()[:4], 1.0)
    onnx = Path(cpu_export.written.classifier_onnx)
    results = [bench.limit(onnx, ("CPUExecutionProvider",)), bench.served(2, DEFAULT_SPEC.name)]
    assert all(result.images_per_s > 0 and result.errors == 0 for result in results)
    table = render_gpu_check(
        GpuCheckReport("(CPU stand-in)", "session server", 0.0, ServingOptions(), results)
    )
    assert "/limit" in table and "served" in table


def test_gpu_utilisation_is_sampled_and_the_dali_rows_are_rendered(tmp_path, monkeypatch) -> None:
    """With a fake ``nvidia-smi`` (no GPU here) that reports two GPUs at 40% and 60%."""
    from tvision.bench.report import RunResult
    from tvision.fidelity import StrategyResult
    from tvision.gpu_check import GpuUtilisation

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 40; echo 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with GpuUtilisation(interval_s=0.05) as busy:
        while len(busy.samples) < 3:
            time.sleep(0.05)
    assert busy.samples and set(busy.samples) == {50.0}
    fields = {"images": 10, "seconds": 1.0, "p50_ms": 1.0, "p99_ms": 2.0,
              "wire_bytes_per_image": 1.0, "server_cpu_s_per_image": 0.0,
              "client_cpu_s_per_image": 0.0}  # fmt: skip
    limit = RunResult("limit", 0, images_per_s=100.0, **fields)
    served = RunResult("served-dali", 16, images_per_s=80.0, **fields)
    fidelity = StrategyResult("dali-gpu", images=2, top1_agreements=2, diffs=[0.01, 0.02])
    report = GpuCheckReport("GPU 0", "url", 1.0, ServingOptions(target="gpu"), [limit, served],
                            {("served-dali", 16): 50.0}, fidelity)  # fmt: skip
    table = render_gpu_check(report)
    assert "served-dali" in table and "0.80" in table and "50%" in table
    assert "top-1 agreement 100.0%, max dp 0.0200 (meets the bound)" in table
