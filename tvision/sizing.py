"""How much shared memory a server may need, from its limits: the size of ``/dev/shm``.

Each python-backend model instance exchanges tensors with Triton through a shared-memory
region of its own, which grows to hold the largest batch it was handed (inputs and outputs
together) and never shrinks. The largest batch a model can be handed is bounded by its
``max_batch_size`` and by the edge's body limit on each request, so the worst case is
known before the server starts. When ``/dev/shm`` is smaller, a burst of large images fails
with "Failed to increase the shared memory pool" instead of being served or shed.

The manifests size the pod's ``/dev/shm`` volume with this (tested), and the launcher warns
when the local ``/dev/shm`` is smaller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from tvision_export.options import ServingOptions

MIB = 1024 * 1024
# The python backend's first allocation for each instance (shm-default-byte-size).
REGION_BASE_BYTES = 1 * MIB


@dataclass(frozen=True)
class SharedMemoryPlan:
    """The worst-case bytes of each python-backend model's regions, and their total."""

    intake_bytes: int
    preprocess_bytes: int
    classifier_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.intake_bytes + self.preprocess_bytes + self.classifier_bytes


def shared_memory_plan(
    *,
    max_request_bytes: int,
    max_batch_size: int,
    python_instances: int,
    classifier_instances: int,
    tensor_bytes: int,
    num_classes: int,
    classifier_in_python: bool,
) -> SharedMemoryPlan:
    """Worst case: every instance handed its largest batch of the largest requests.

    ``python_instances`` is the count of each of the intake and preprocessing models (they
    share it); the classifier uses shared memory only on the cpu target, where it is a
    python-backend model (``classifier_in_python``).
    """
    # The intake model reads one request and passes the same bytes on.
    intake = python_instances * (REGION_BASE_BYTES + 2 * max_request_bytes)
    # Preprocessing takes a batch of encoded images and returns one tensor per image.
    preprocess = python_instances * (
        REGION_BASE_BYTES + max_batch_size * (max_request_bytes + tensor_bytes)
    )
    classifier = 0
    if classifier_in_python:
        classifier = classifier_instances * (
            REGION_BASE_BYTES + max_batch_size * (tensor_bytes + 4 * num_classes)
        )
    return SharedMemoryPlan(intake, preprocess, classifier)


def dev_shm_bytes(path: str = "/dev/shm") -> int | None:
    """The size of the shared-memory filesystem here, or None where there is none."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize


def plan_for_options(
    options: ServingOptions, max_request_bytes: int, tensor_bytes: int, num_classes: int
) -> SharedMemoryPlan:
    """The plan for an export's serving options (``ServingOptions(target=...)``)."""
    return shared_memory_plan(
        max_request_bytes=max_request_bytes,
        max_batch_size=options.max_batch_size,
        python_instances=options.preprocess_instances,
        classifier_instances=options.classifier_instances,
        tensor_bytes=tensor_bytes,
        num_classes=num_classes,
        classifier_in_python=options.target == "cpu",
    )


def repository_shared_memory_bytes(repository: Path, max_request_bytes: int) -> int:
    """The same worst case read from a local repository's configs: for each python-backend
    model (its newest config), instances x (region base + largest batch x the bytes of its
    inputs and outputs), an encoded image (TYPE_STRING) counting as a whole request."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    total = 0
    for config_file in sorted(repository.glob("*/config.pbtxt")):
        try:
            config = text_format.Parse(config_file.read_text(), model_config_pb2.ModelConfig())
        except (OSError, text_format.ParseError):
            continue
        if config.backend != "python":
            continue
        instances = sum(group.count for group in config.instance_group) or 1
        preferred = list(config.dynamic_batching.preferred_batch_size)
        batch = 1 if preferred == [1] else max(1, config.max_batch_size)

        def item_bytes(tensor: model_config_pb2.ModelInput | model_config_pb2.ModelOutput) -> int:
            if tensor.data_type == model_config_pb2.TYPE_STRING:
                return max_request_bytes
            count = 1
            for dim in tensor.dims:
                count *= max(1, dim)
            return 4 * count

        per_item = sum(item_bytes(t) for t in config.input) + sum(
            item_bytes(t) for t in config.output
        )
        total += instances * (REGION_BASE_BYTES + batch * per_item)
    return total
