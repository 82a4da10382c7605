"""``tvision plan``: CPU cores and pods for a rate of images per second."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvision.cli._common import Subparsers, emit, fail


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="CPU cores and pods for a rate of images per second (preprocessing measured here)",
    )
    parser.add_argument("--target", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument(
        "--rate", type=float, nargs="+", required=True, help="images per second to plan for"
    )
    parser.add_argument(
        "--gpu-img-s", type=float, default=None,
        help="classifier throughput of one pod's GPU, img/s (measured elsewhere; "
        "`tvision gpu-check` measures it on a GPU node)",
    )  # fmt: skip
    parser.add_argument("--gpu-source", default="", help="where the --gpu-img-s figure is from")
    parser.add_argument(
        "--max-cores-per-pod", type=int, default=16,
        help="the most CPU cores one pod may request (a node's size); more pods beyond it",
    )  # fmt: skip
    parser.add_argument(
        "--preprocess", choices=("python", "dali"), default="python",
        help="python: the pod's cores decode and resize; dali: the GPU does (nvJPEG), and "
        "--gpu-img-s is then the GPU's throughput for decode, resize and classifier together",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tvision.plan import make_plan, render_plan

    try:
        plan = make_plan(
            args.rate, args.target, args.gpu_img_s, args.gpu_source, args.repeats,
            args.max_cores_per_pod, args.preprocess,
        )  # fmt: skip
    except ValueError as exc:
        return fail(exc)
    return emit(render_plan(plan), plan.to_json(), args.json)
