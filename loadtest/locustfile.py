"""Locust load test for a tvision deployment, through the sync SDK over gRPC.

Run headless against a server (``--host`` is Triton's gRPC address)::

    locust -f loadtest/locustfile.py --headless -u 16 -r 4 -t 60s --host 127.0.0.1:8001 \
        --slo-p99-ms 500 --slo-max-failure-ratio 0.001

The run gates a release: it exits 0 when every service-level objective is met, 1 when one
is missed (each named with its threshold and measured value), and 2 when it could not run
(no request succeeded). In distributed mode only the master judges; workers exit 0.
It needs only the SDK and Locust: the photos it sends ship beside it in ``images/``, or come
from ``--images DIR`` or ``--images 'GLOB'`` (sent as they are: formats and sizes as found).
For a ramp, add the shape: ``-f loadtest/locustfile.py,loadtest/shapes.py``.
For more load than one machine makes, use Locust's own ``--master`` / ``--worker`` mode.
"""

from __future__ import annotations

# gRPC must cooperate with gevent before anything opens a channel, or calls run one at a time.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import glob  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

from locust import User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from tvision_client import Client, ClientError  # noqa: E402

REQUEST_TYPE = "grpc"
BUNDLED_IMAGES = Path(__file__).resolve().parent / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("tvision")
    group.add_argument(
        "--model", default="efficientnet_lite0", env_var="TVISION_MODEL", help="ensemble to call"
    )
    group.add_argument("--top-k", type=int, default=5, env_var="TVISION_TOP_K")
    group.add_argument(
        "--timeout-s",
        type=float,
        default=10.0,
        env_var="TVISION_TIMEOUT_S",
        help="deadline per request, retries included",
    )
    group.add_argument(
        "--images",
        default=str(BUNDLED_IMAGES),
        env_var="TVISION_IMAGES",
        help="a directory or a quoted glob of images to send in turn (default: bundled photos)",
    )
    group.add_argument(
        "--slo-p99-ms",
        type=float,
        default=0.0,
        env_var="TVISION_SLO_P99_MS",
        help="fail the run when p99 latency exceeds this (0: no gate)",
    )
    group.add_argument(
        "--slo-max-failure-ratio",
        type=float,
        default=0.0,
        env_var="TVISION_SLO_MAX_FAILURE_RATIO",
        help="fail the run when more requests than this fraction fail",
    )


def load_images(source: str) -> list[bytes]:
    """The encoded images in a directory, or matching a glob, in name order.

    Raises:
        FileNotFoundError: nothing matched; the message names what was looked for.
    """
    directory = Path(source)
    if directory.is_dir():
        paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found at {source!r}")
    return [path.read_bytes() for path in paths]


class TritonUser(User):
    """A user that owns one SDK client and reports each call to Locust."""

    abstract = True
    _images: ClassVar[list[bytes]] = []

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.model = options.model if options else "efficientnet_lite0"
        self.top_k = options.top_k if options else 5
        timeout_s = options.timeout_s if options else 10.0
        if not TritonUser._images:
            TritonUser._images = load_images(options.images if options else str(BUNDLED_IMAGES))
        self.client = Client(self.host or "127.0.0.1:8001", model=self.model, timeout_s=timeout_s)
        self._next_image = 0

    def classify(self, name: str) -> None:
        """Classify the next sample image; the one place metrics are fired."""
        image = TritonUser._images[self._next_image % len(TritonUser._images)]
        self._next_image += 1
        started = time.perf_counter()
        exception: Exception | None = None
        try:
            self.client.classify(image, top_k=self.top_k)
        except ClientError as exc:
            exception = exc
        events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=len(image),
            exception=exception,
            context={},
        )

    def on_stop(self) -> None:
        self.client.close()


class ClassifyUser(TritonUser):
    """Sends one real JPEG per request, back to back."""

    @task
    def classify_jpeg(self) -> None:
        self.classify("classify")


# The gate's exit codes: a release pipeline can tell a missed SLO from a run that never ran.
EXIT_PASSED, EXIT_SLO_MISSED, EXIT_COULD_NOT_RUN = 0, 1, 2


@events.quitting.add_listener
def _enforce_slos(environment: Environment, **_kwargs: Any) -> None:
    """Judge the run once, where its totals are: the master, or a single process.

    The verdict sets the exit code explicitly, in every case: Locust's own default (exit 1
    on any failed request) would override a failure-ratio SLO that tolerates some. Workers
    of a distributed run hold no totals and are not judged; they exit 0 unless they could
    not run.
    """
    from locust.runners import WorkerRunner

    options = environment.parsed_options
    if options is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        environment.process_exit_code = EXIT_PASSED
        return
    stats = environment.stats.total
    if stats.num_requests == stats.num_failures:  # none made, or none succeeded
        print(
            f"SLO gate COULD NOT RUN: {stats.num_requests} requests, none succeeded "
            "(is the server reachable, and the model loaded?)"
        )
        environment.process_exit_code = EXIT_COULD_NOT_RUN
        return
    p99_ms = stats.get_response_time_percentile(0.99)
    problems = []
    if options.slo_p99_ms > 0 and p99_ms > options.slo_p99_ms:
        problems.append(f"p99 {p99_ms:.0f} ms > {options.slo_p99_ms:g} ms")
    if stats.fail_ratio > options.slo_max_failure_ratio:
        problems.append(f"failure ratio {stats.fail_ratio:.4f} > {options.slo_max_failure_ratio:g}")
    summary = (
        f"{stats.num_requests} requests, p99 {p99_ms:.0f} ms, failure ratio {stats.fail_ratio:.4f}"
    )
    if problems:
        print("SLO gate FAILED: " + "; ".join(problems) + f" ({summary})")
        environment.process_exit_code = EXIT_SLO_MISSED
    else:
        print(f"SLO gate passed: {summary}")
        environment.process_exit_code = EXIT_PASSED
