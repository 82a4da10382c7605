"""Readiness that means "can serve": the ensemble is ready, and the python backend's shared
memory can still grow to the worst case ``tvision.sizing`` plans for it.

Each python-backend instance's region grows to the largest batch it was handed and never
shrinks (tvision/sizing.py). A server whose ``/dev/shm`` cannot hold that worst case serves
small images and then, under a burst of large ones, fails requests with "Failed to increase
the shared memory pool"; its ensemble stays ready all the while. So readiness here also asks
the shared memory: the bytes still free, plus those the backend's regions already hold,
must reach the plan. Pages a region has reserved but not yet touched count as neither, so
nothing is counted twice.

Standard library only: the Kubernetes pod runs this file as its readiness probe in the
Triton container (``k8s/base/ready.py`` is this file, tested equal), and the launcher
imports it for ``tvision serve --health-port``.

    python3 ready.py --url http://127.0.0.1:18000/v2/models/NAME/ready \\
        --shm-plan-bytes N [--shm-prefix triton_python_backend_shm_region_]

Exit 0 when ready; 1, with the reason on stderr, when not.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

# The python backend's region names when Triton is not told otherwise (the pod's case).
TRITON_SHM_PREFIX = "triton_python_backend_shm_region_"
SHM_DIR = "/dev/shm"


def shared_memory_shortfall(plan_bytes: int, prefix: str, shm_dir: str = SHM_DIR) -> int:
    """Bytes by which the regions named ``prefix*`` could not grow to ``plan_bytes``: free
    space plus the pages those regions occupy, short of the plan; 0 when they can."""
    stats = os.statvfs(shm_dir)
    free = stats.f_bavail * stats.f_frsize
    held = 0
    with os.scandir(shm_dir) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                held += entry.stat(follow_symlinks=False).st_blocks * 512
    return max(0, plan_bytes - free - held)


def shared_memory_problem(plan_bytes: int, prefix: str, shm_dir: str = SHM_DIR) -> str | None:
    """Why shared memory keeps the server from being ready, or None."""
    try:
        short = shared_memory_shortfall(plan_bytes, prefix, shm_dir)
    except OSError as exc:
        return f"cannot read {shm_dir}: {exc}"
    if short == 0:
        return None
    mib = 1024 * 1024
    return (
        f"{shm_dir} is {short / mib:.0f} MiB short of the {plan_bytes / mib:.0f} MiB the "
        "python backend may need for its largest batches (tvision.sizing): size it to "
        "the plan, or a burst of large images fails instead of being served or shed"
    )


def endpoint_problem(url: str, timeout_s: float = 2.0) -> str | None:
    """Why ``url`` (a Triton readiness path) does not answer 200, or None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the ensemble's readiness URL")
    parser.add_argument("--shm-plan-bytes", type=int, required=True, help="tvision.sizing's plan")
    parser.add_argument("--shm-prefix", default=TRITON_SHM_PREFIX, help="the regions' names")
    parser.add_argument("--shm-dir", default=SHM_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problem = endpoint_problem(args.url) or shared_memory_problem(
        args.shm_plan_bytes, args.shm_prefix, args.shm_dir
    )
    if problem:
        print(f"not ready: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
