"""The gpu target, checked on paper (no GPU here): its defaults, TensorRT as the ONNX Runtime
backend documents it, warmup at every batch size, and the gpu component agreeing with it."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from tests.k8s.rendering import AUTOSCALED, one, render, triton_container
from tvision_export import configs
from tvision_export.options import ServingOptions
from tvision_export.repository import ModelNames, write_version
from tvision_export.spec import DEFAULT_SPEC

NAMES = ModelNames.for_model(DEFAULT_SPEC.name)

# The keys the ONNX Runtime backend documents for its "tensorrt" gpu_execution_accelerator,
# written out from triton-inference-server/onnxruntime_backend README.md, section "ONNX
# Runtime with TensorRT optimization" (its bullet list and the table "Parameter mapping
# between ONNX Runtime and Triton ONNXRuntime Backend"), not from configs.py: a key the
# exporter invents fails here even if it is added to the code's own table too.
DOCUMENTED_TENSORRT_KEYS = frozenset({
    "precision_mode", "max_workspace_size_bytes", "int8_calibration_table_name",
    "int8_use_native_calibration_table", "trt_engine_cache_enable", "trt_engine_cache_path",
    "trt_max_partition_iterations", "trt_min_subgraph_size", "trt_dla_enable", "trt_dla_core",
    "trt_engine_cache_prefix", "trt_dump_subgraphs", "trt_force_sequential_engine_build",
    "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback",
    "trt_timing_cache_enable", "trt_timing_cache_path", "trt_force_timing_cache",
    "trt_detailed_build_log", "trt_build_heuristics_enable", "trt_sparsity_enable",
    "trt_builder_optimization_level", "trt_auxiliary_streams", "trt_tactic_sources",
    "trt_extra_plugin_lib_paths", "trt_profile_min_shapes", "trt_profile_max_shapes",
    "trt_profile_opt_shapes", "trt_cuda_graph_enable", "trt_dump_ep_context_model",
    "trt_ep_context_file_path", "trt_ep_context_embed_mode",
})  # fmt: skip

# The gpu defaults as the README states them ("The gpu target", "Defaults for a GPU"):
# batches of 16, 32 and 64 (max 64), at most 1 ms of queue delay, one classifier instance,
# pod_cpus 8 giving 7 preprocessing instances; the first start gets 20 minutes
# (120 x 10 s startup probe).
README_GPU = {"max_batch_size": 64, "preferred_batch_sizes": (16, 32, 64),
              "max_queue_delay_us": 1000, "classifier_instances": 1, "pod_cpus": 8,
              "preprocess_instances": 7}  # fmt: skip
README_FIRST_START_S = 20 * 60


@pytest.fixture(scope="module")
def gpu_configs(
    default_source, tmp_path_factory
) -> dict[str, configs.model_config_pb2.ModelConfig]:
    repository = tmp_path_factory.mktemp("gpu") / "model_repository"
    options = ServingOptions(target="gpu", fp16=True)
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
    assert keys <= DOCUMENTED_TENSORRT_KEYS, keys - DOCUMENTED_TENSORRT_KEYS
    # The code's table names its source; it must not list a key the source does not.
    assert configs.TENSORRT_ACCELERATOR_KEYS <= DOCUMENTED_TENSORRT_KEYS
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    assert accelerator.parameters["trt_engine_cache_path"] == configs.TENSORRT_CACHE_DIR
    # One profile from batch 1 to max_batch_size: no batch size builds its own engine.
    (input_name,) = [tensor.name for tensor in classifier.input]
    shape = "x".join(str(dim) for dim in DEFAULT_SPEC.input_dims)
    assert accelerator.parameters["trt_profile_min_shapes"] == f"{input_name}:1x{shape}"
    assert accelerator.parameters["trt_profile_max_shapes"] == (
        f"{input_name}:{classifier.max_batch_size}x{shape}"
    )


def test_the_gpu_configs_carry_the_documented_defaults(gpu_configs) -> None:
    classifier = gpu_configs[NAMES.classifier]
    batching = classifier.dynamic_batching
    assert classifier.max_batch_size == README_GPU["max_batch_size"]
    assert tuple(batching.preferred_batch_size) == README_GPU["preferred_batch_sizes"]
    assert batching.max_queue_delay_microseconds == README_GPU["max_queue_delay_us"]
    assert classifier.instance_group[0].count == README_GPU["classifier_instances"]
    assert classifier.instance_group[0].kind == classifier.instance_group[0].KIND_GPU
    assert gpu_configs[NAMES.preprocess].instance_group[0].count == 7


def test_warmup_runs_every_batch_size_the_batcher_executes(gpu_configs) -> None:
    classifier = gpu_configs[NAMES.classifier]
    warmed = sorted(warmup.batch_size for warmup in classifier.model_warmup)
    expected = sorted({*classifier.dynamic_batching.preferred_batch_size,
                       classifier.max_batch_size})  # fmt: skip
    assert warmed == expected
    assert len(warmed) >= 3


def test_the_gpu_target_gets_its_own_defaults_however_it_is_made() -> None:
    """``ServingOptions(target="gpu")``, ``tvision bench --set target=gpu`` and ``tvision
    export --target gpu`` all make the README's gpu target, never the 2-core cpu one."""
    from tvision.bench.run import bench_options
    from tvision.cli._options import parse_assignments

    made = {
        "constructor": ServingOptions(target="gpu"),
        "bench --set": bench_options(parse_assignments(["target=gpu"])),
        "export flags": _from_flags(["--target", "gpu"]),
    }
    for how, options in made.items():
        assert {name: getattr(options, name) for name in README_GPU} == README_GPU, how
    # replace changes only what it is told to: a gpu object stays the gpu defaults.
    assert replace(ServingOptions(target="gpu"), fp16=True).max_batch_size == 64


def test_the_export_flags_give_the_gpu_defaults() -> None:
    from tvision.bench.run import bench_options

    assert _from_flags(["--target", "gpu", "--pod-cpus", "16"]).preprocess_instances == 15
    assert bench_options({"target": "gpu", "pod_cpus": 16}).preprocess_instances == 15
    # Given explicitly, a flag wins over the derived value, and cpu keeps its own defaults.
    assert _from_flags(["--target", "gpu", "--preprocess-instances", "3"]).preprocess_instances == 3
    assert _from_flags([]) == ServingOptions()


def _from_flags(flags: list[str]) -> ServingOptions:
    from tvision.cli._options import add_serving_arguments, serving_options_from

    parser = argparse.ArgumentParser()
    add_serving_arguments(parser)
    return serving_options_from(parser.parse_args(flags))


@pytest.mark.parametrize("target", AUTOSCALED)
def test_the_gpu_component_agrees_with_the_gpu_export(target, gpu_configs) -> None:
    documents = render(target)
    container = triton_container(documents)
    # The pod requests the cores the export sized its preprocessing instances for.
    pod_cpus = README_GPU["pod_cpus"]
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
    # A first start builds the engines: the startup probe allows the README's 20 minutes.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= README_FIRST_START_S
