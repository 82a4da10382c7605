"""``tvision gpu-check``: the gpu target on a real GPU; fails, never skips, without one."""

from __future__ import annotations

import argparse
import sys

from tvision.cli._common import Subparsers, int_list
from tvision.exit_codes import EXIT_COULD_NOT_RUN, EXIT_OK


def add_parser(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    from tvision.gpu_check import DEFAULT_IMAGE

    parser = subparsers.add_parser(
        "gpu-check",
        help="the gpu target on a real GPU: served vs client-side vs the in-process limit "
        "(fails, never skips, without a GPU)",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="the serving image (Docker)")
    parser.add_argument("--url", default=None, help="HOST:PORT of a Triton you started instead")
    parser.add_argument("--no-fp16", dest="fp16", action="store_false", help="no TensorRT FP16")
    parser.add_argument(
        "--preprocess", choices=("python", "dali", "both"), default="both",
        help="the preprocessing paths to serve and compare (dali also measures nvJPEG's "
        "pixels against the reference; it needs tvision[dali] on this node)",
    )  # fmt: skip
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int_list, default=(16, 64))
    parser.add_argument("--ready-timeout-s", type=float, default=1800.0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tvision.gpu_check import GpuCheckError, render_gpu_check, run_gpu_check

    try:
        report = run_gpu_check(
            args.image, args.url, args.fp16, args.duration_s, tuple(args.concurrency),
            args.ready_timeout_s,
            ("python", "dali") if args.preprocess == "both" else (args.preprocess,),
        )  # fmt: skip
    except GpuCheckError as exc:
        print(f"GPU CHECK FAILED: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    print(render_gpu_check(report))
    return EXIT_OK
