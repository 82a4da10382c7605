"""``tvision plan``: how many CPU cores and pods a rate of images per second needs.

The CPU side is measured here: the preprocessing model's own code (built from the config
the export writes for the target) decodes, resizes and crops each image of the bench mix
on one core. The GPU side is not measurable without a GPU: its throughput per pod is an
input (``--gpu-img-s``), and the plan says where it came from.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tvision_export.options import Target

# Plan for preprocessing cores this busy at the planned rate, so that bursts queue briefly
# instead of growing without bound.
TARGET_UTILISATION = 0.75
# One core per pod beyond preprocessing: Triton's endpoints, the intake model, GPU feeding.
SERVING_CORES = 1


@dataclass(frozen=True)
class ImageCost:
    name: str
    ms_per_image: float


@dataclass(frozen=True)
class PlanRow:
    rate_img_s: float
    pods: int
    rate_per_pod: float
    cores_per_pod: int
    preprocess_instances: int
    gpu_utilisation: float | None


@dataclass(frozen=True)
class CapacityPlan:
    target: str
    preprocess: str
    cpu_count: int | None
    costs: list[ImageCost]
    mean_ms_per_image: float
    gpu_img_s: float | None
    gpu_source: str
    rows: list[PlanRow]
    max_cores_per_pod: int = 16

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure_costs(
    target: Target = "gpu", repeats: int = 3, preprocess: str = "python"
) -> list[ImageCost]:
    """What each bench image costs one core, in ms (best of ``repeats``, after one warm-up),
    exactly as the target's models do it: with the python preprocessing, decode, resize,
    crop and normalise; on the DALI path, what stays on the CPU, the intake's check
    (``dali_intake.DaliIntake``: the header and a strict decode at 1/8 scale)."""
    from tvision.bench.images import bench_images
    from tvision.bench.paths import preprocessor
    from tvision_export.options import ServingOptions
    from tvision_export.spec import DEFAULT_SPEC
    from tvision_export.triton_models.dali_intake import DaliIntake

    options = ServingOptions(target=target, preprocess=preprocess)
    pre = preprocessor(DEFAULT_SPEC, options)
    intake = DaliIntake(pre)

    def python(data: bytes) -> None:
        pre.normalise([pre.decode(data)])

    def dali(data: bytes) -> None:
        intake.batch([data])

    work = dali if preprocess == "dali" else python
    costs = []
    for image in bench_images():
        work(image.data)
        best = math.inf
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            work(image.data)
            best = min(best, time.perf_counter() - started)
        costs.append(ImageCost(image.name, best * 1000.0))
    return costs


def plan_rows(
    rates: Sequence[float], mean_ms: float, gpu_img_s: float | None, max_cores_per_pod: int
) -> list[PlanRow]:
    """Pods are as many as the GPU throughput needs (one GPU each), or more when one pod's
    share of preprocessing would need more than ``max_cores_per_pod``; each pod gets the
    preprocessing cores its share of the rate needs."""
    rows = []
    for rate in rates:
        gpu_pods = max(1, math.ceil(rate / gpu_img_s)) if gpu_img_s else 1
        all_cores = rate * mean_ms / 1000.0 / TARGET_UTILISATION
        cpu_pods = math.ceil(all_cores / max(1, max_cores_per_pod - SERVING_CORES))
        pods = max(gpu_pods, cpu_pods, 1)
        per_pod = rate / pods
        busy_cores = per_pod * mean_ms / 1000.0 / TARGET_UTILISATION
        instances = max(1, math.ceil(busy_cores))
        rows.append(
            PlanRow(
                rate_img_s=rate,
                pods=pods,
                rate_per_pod=per_pod,
                cores_per_pod=instances + SERVING_CORES,
                preprocess_instances=instances,
                gpu_utilisation=per_pod / gpu_img_s if gpu_img_s else None,
            )
        )
    return rows


def check_request(rates: Sequence[float], gpu_img_s: float | None, max_cores_per_pod: int) -> None:
    """Raises ValueError for a plan that cannot be made: a rate, or a GPU throughput when
    given, that is not positive, or pods of fewer than 2 cores (one serves Triton)."""
    if not rates or any(rate <= 0 for rate in rates):
        raise ValueError(f"--rate must be positive, got {', '.join(map(str, rates)) or 'none'}")
    if gpu_img_s is not None and gpu_img_s <= 0:
        raise ValueError(f"--gpu-img-s must be positive when given, got {gpu_img_s:g}")
    if max_cores_per_pod < 1 + SERVING_CORES:
        raise ValueError(
            f"--max-cores-per-pod must be at least {1 + SERVING_CORES} (one core serves "
            f"Triton), got {max_cores_per_pod}"
        )


def make_plan(
    rates: Sequence[float],
    target: str = "gpu",
    gpu_img_s: float | None = None,
    gpu_source: str = "",
    repeats: int = 3,
    max_cores_per_pod: int = 16,
    preprocess: str = "python",
) -> CapacityPlan:
    """Measure the preprocessing cost here and plan each rate.

    Raises:
        ValueError: not a target, or see ``check_request``; nothing is measured then.
    """
    from tvision_export.options import check_target

    checked = check_target(target)
    check_request(rates, gpu_img_s, max_cores_per_pod)
    if preprocess not in ("python", "dali"):
        raise ValueError(f"--preprocess must be python or dali, got {preprocess!r}")
    if preprocess == "dali" and checked != "gpu":
        raise ValueError("--preprocess dali needs the gpu target")
    costs = measure_costs(checked, repeats, preprocess)
    mean_ms = sum(cost.ms_per_image for cost in costs) / len(costs)
    return CapacityPlan(
        target=target, preprocess=preprocess, cpu_count=os.cpu_count(), costs=costs,
        mean_ms_per_image=mean_ms,
        gpu_img_s=gpu_img_s, gpu_source=gpu_source,
        rows=plan_rows(rates, mean_ms, gpu_img_s, max_cores_per_pod),
        max_cores_per_pod=max_cores_per_pod,
    )  # fmt: skip


def render_plan(plan: CapacityPlan) -> str:
    what = (
        "DALI path: the intake's check, what stays on the CPU (decode and resize run on the GPU)"
        if plan.preprocess == "dali"
        else f"{plan.target} target's decode settings"
    )
    lines = [
        f"Preprocessing cost per image and core, measured here ({plan.cpu_count} cores, "
        f"{what}, best of the repeats):",
    ]
    lines += [f"  {cost.name:<34} {cost.ms_per_image:7.2f} ms" for cost in plan.costs]
    lines.append(f"  {'mean over the bench mix':<34} {plan.mean_ms_per_image:7.2f} ms")
    if plan.gpu_img_s:
        lines.append(
            f"GPU throughput per pod: {plan.gpu_img_s:g} img/s"
            + (" (decode, resize and classifier together)" if plan.preprocess == "dali" else "")
            + ", NOT measured here"
            + (f" ({plan.gpu_source})" if plan.gpu_source else "")
        )
    else:
        lines.append("GPU throughput per pod: not given (--gpu-img-s); one pod per row")
    lines.append(
        f"Cores are planned at {TARGET_UTILISATION:.0%} busy, plus {SERVING_CORES} for "
        f"Triton and the GPU feed, at most {plan.max_cores_per_pod} per pod (more pods "
        "beyond that); export with --pod-cpus <cores per pod> and set the gpu component's "
        "CPU request to the same."
    )
    header = f"{'img/s':>8} {'pods':>5} {'img/s/pod':>10} {'cores/pod':>10} {'preprocess':>11}"
    header += f" {'GPU busy':>9}" if plan.gpu_img_s else ""
    lines += ["", header]
    for row in plan.rows:
        line = (
            f"{row.rate_img_s:8g} {row.pods:5d} {row.rate_per_pod:10.0f} "
            f"{row.cores_per_pod:10d} {row.preprocess_instances:11d}"
        )
        if row.gpu_utilisation is not None:
            line += f" {row.gpu_utilisation:9.0%}"
        lines.append(line)
    return "\n".join(lines)
