"""The gpu target, checked on paper (no GPU here): its defaults, TensorRT as the ONNX Runtime
backend documents it, warmup at every batch size, and the gpu component agreeing with it."""

from __future__ import annotations

import argparse

import pytest

from tests.k8s.rendering import AUTOSCALED, one, render, triton_container
from tvision_export import configs
from tvision_export.configs import ServingOptions
from tvision_export.repository import ModelNames, write_version
from tvision_export.spec import DEFAULT_SPEC

NAMES = ModelNames.for_model(DEFAULT_SPEC.name)


@pytest.fixture(scope="module")
def gpu_configs(
    default_source, tmp_path_factory
) -> dict[str, configs.model_config_pb2.ModelConfig]:
    repository = tmp_path_factory.mktemp("gpu") / "model_repository"
    options = ServingOptions.for_target("gpu", fp16=True)
    write_version(repository, DEFAULT_SPEC.name, default_source, options)
    # Strict parsing into ModelConfig: an unknown field fails here.
    return {
        path.parent.name: configs.parse(path.read_text())
        for path in repository.glob("*/config.pbtxt")
    }


def test_every_tensorrt_parameter_is_one_the_backend_documents(gpu_configs) -> None:
    classifier = gpu_configs[NAMES.classifier]
    (accelerator,) = classifier.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    keys = set(accelerator.parameters)
    assert keys <= configs.TENSORRT_ACCELERATOR_KEYS, keys - configs.TENSORRT_ACCELERATOR_KEYS
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    assert accelerator.parameters["trt_engine_cache_path"] == configs.TENSORRT_CACHE_DIR
    # One profile from batch 1 to max_batch_size: no batch size builds its own engine.
    (input_name,) = [tensor.name for tensor in classifier.input]
    shape = "x".join(str(dim) for dim in DEFAULT_SPEC.input_dims)
    assert accelerator.parameters["trt_profile_min_shapes"] == f"{input_name}:1x{shape}"
    assert accelerator.parameters["trt_profile_max_shapes"] == (
        f"{input_name}:{classifier.max_batch_size}x{shape}"
    )


def test_warmup_runs_every_batch_size_the_batcher_executes(gpu_configs) -> None:
    classifier = gpu_configs[NAMES.classifier]
    warmed = sorted(warmup.batch_size for warmup in classifier.model_warmup)
    expected = sorted({*classifier.dynamic_batching.preferred_batch_size,
                       classifier.max_batch_size})  # fmt: skip
    assert warmed == expected
    assert len(warmed) >= 3


def test_the_export_flags_give_the_gpu_defaults() -> None:
    parser = argparse.ArgumentParser()
    ServingOptions.add_arguments(parser)
    gpu = ServingOptions.from_arguments(parser.parse_args(["--target", "gpu"]))
    assert gpu.preferred_batch_sizes == configs.TARGET_DEFAULTS["gpu"]["preferred_batch_sizes"]
    assert gpu.preprocess_instances == gpu.pod_cpus - 1
    sized = ServingOptions.from_arguments(
        parser.parse_args(["--target", "gpu", "--pod-cpus", "16"])
    )
    assert sized.preprocess_instances == 15
    # Given explicitly, a flag wins over the derived value, and cpu keeps its own defaults.
    given = parser.parse_args(["--target", "gpu", "--preprocess-instances", "3"])
    assert ServingOptions.from_arguments(given).preprocess_instances == 3
    assert ServingOptions.from_arguments(parser.parse_args([])) == ServingOptions()


@pytest.mark.parametrize("target", AUTOSCALED)
def test_the_gpu_component_agrees_with_the_gpu_export(target, gpu_configs) -> None:
    documents = render(target)
    container = triton_container(documents)
    # The pod requests the cores the export sized its preprocessing instances for.
    pod_cpus = configs.TARGET_DEFAULTS["gpu"]["pod_cpus"]
    assert container["resources"]["requests"]["cpu"] == str(pod_cpus)
    assert gpu_configs[NAMES.preprocess].instance_group[0].count == pod_cpus - 1
    # The engine cache is a volume mounted where the config points.
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["tensorrt-cache"] == configs.TENSORRT_CACHE_DIR
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    claim = volumes["tensorrt-cache"]["persistentVolumeClaim"]["claimName"]
    assert any(
        d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in documents
    )
    # A first start builds the engines: the startup probe allows at least 15 minutes.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
