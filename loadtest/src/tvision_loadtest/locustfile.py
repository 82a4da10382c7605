"""Locust load test for a tvision deployment, through the sync SDK over gRPC.

Run headless against a server (``--host`` is Triton's gRPC address)::

    tvision-loadtest --headless -u 16 -r 4 -t 60s --host 127.0.0.1:8001 \\
        --slo-p99-ms 500 --slo-max-failure-ratio 0.001 --report report.html

The run gates a release: it exits 0 when every objective is met, 1 when one is missed, and
2 when it could not run (no request succeeded). Each objective is printed, and written at
the top of ``--report``, with its threshold and measured value. ``--save-baseline FILE``
keeps this run's figures; ``--baseline FILE`` adds regression objectives against them.
In distributed mode (``--processes N``, or ``--master`` and ``--worker``) only the master
judges and reports; workers exit 0 unless they could not run.

It needs only the SDK, Locust and Pillow. The photos ship in the package (``images/``),
or come from ``--images DIR`` or ``--images 'GLOB'``, sent as they are.
"""

from __future__ import annotations

# gRPC must cooperate with gevent before anything opens a channel, or calls run one at a time.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import glob  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import gevent  # noqa: E402
from locust import User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import WorkerRunner  # noqa: E402
from PIL import Image  # noqa: E402

from tvision_client import Client, ClientError  # noqa: E402
from tvision_loadtest import (  # noqa: E402
    BUNDLED_IMAGES,
    gate,
    report,
    server_metrics,
)

REQUEST_TYPE = "grpc"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SAMPLE_INTERVAL_S = 1.0


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("tvision")
    group.add_argument(
        "--model", default="efficientnet_lite0", env_var="TVISION_MODEL", help="ensemble to call"
    )
    group.add_argument("--top-k", type=int, default=5, env_var="TVISION_TOP_K")
    group.add_argument(
        "--timeout-s", type=float, default=10.0, env_var="TVISION_TIMEOUT_S",
        help="deadline per request, retries included",
    )  # fmt: skip
    group.add_argument(
        "--images", default=str(BUNDLED_IMAGES), env_var="TVISION_IMAGES",
        help="a directory or a quoted glob of images to send in turn (default: bundled photos)",
    )  # fmt: skip
    slo = parser.add_argument_group("tvision release gate (0: objective not used)")
    for name, help_text in (
        ("p50-ms", "p50 latency limit, ms"),
        ("p95-ms", "p95 latency limit, ms"),
        ("p99-ms", "p99 latency limit, ms"),
        ("max-failure-ratio", "largest tolerated fraction of failed requests"),
        ("min-throughput", "lowest acceptable throughput, requests per second"),
    ):
        env = "TVISION_SLO_" + name.upper().replace("-", "_")
        slo.add_argument(f"--slo-{name}", type=float, default=0.0, env_var=env, help=help_text)
    slo.add_argument(
        "--baseline", default="", env_var="TVISION_BASELINE",
        help="a --save-baseline file: adds throughput and p99 regression objectives",
    )  # fmt: skip
    slo.add_argument("--max-throughput-drop", type=float, default=0.10,
                     help="vs the baseline, as a fraction (default 0.10)")  # fmt: skip
    slo.add_argument("--max-p99-rise", type=float, default=0.20,
                     help="vs the baseline, as a fraction (default 0.20)")  # fmt: skip
    slo.add_argument("--save-baseline", default="", help="write this run's figures (JSON)")
    slo.add_argument("--report", default="", help="write the verdict and charts (HTML)")
    slo.add_argument(
        "--metrics-url", default="", env_var="TVISION_METRICS_URL",
        help="Triton's metrics endpoint (http://HOST:8002/metrics), for the report's server side",
    )  # fmt: skip


def image_paths(source: str) -> list[Path]:
    """The image files in a directory, or matching a glob, in name order.

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
    return paths


def load_images(source: str) -> list[bytes]:
    return [path.read_bytes() for path in image_paths(source)]


def image_mix(source: str) -> dict[str, str]:
    """Name -> "FORMAT WxH, N kB" of each image sent, for the baseline and report."""
    mix = {}
    for path in image_paths(source):
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as image:
                described = f"{image.format} {image.width}x{image.height}"
        except OSError:
            described = "not an image"
        mix[path.name] = f"{described}, {len(data) // 1024} kB"
    return mix


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
        """Classify the next image; the one place metrics are fired."""
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
    """Sends one real image per request, back to back."""

    @task
    def classify_jpeg(self) -> None:
        self.classify("classify")


class _Run:
    """What the judging process (master or single) records while the run goes on."""

    started = 0.0
    samples: ClassVar[list[report.Sample]] = []
    metrics_before: server_metrics.Counters | None = None
    metrics_note = ""
    server_config = ""


def _server_config(host: str, model: str) -> str:
    """A digest of the served ensemble's and its composing models' configs (open APIs)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(host)
    try:
        configs = {}
        pending = [model]
        while pending:
            name = pending.pop()
            config = client.get_model_config(name, as_json=True)["config"]
            configs[name] = config
            for step in config.get("ensemble_scheduling", {}).get("step", []):
                pending.append(step["model_name"])
        return hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()
    finally:
        client.close()


def _sample(environment: Environment) -> None:
    total = environment.stats.total
    runner = environment.runner
    while True:
        gevent.sleep(SAMPLE_INTERVAL_S)

        def current(percentile: float) -> float:
            return float(total.get_current_response_time_percentile(percentile) or 0.0)

        _Run.samples.append(
            report.Sample(
                elapsed_s=time.monotonic() - _Run.started,
                users=runner.user_count if runner else 0,
                rps=float(total.current_rps or 0.0),
                p50_ms=current(0.5),
                p95_ms=current(0.95),
                p99_ms=current(0.99),
            )
        )


@events.test_start.add_listener
def _on_start(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    _Run.started = time.monotonic()
    _Run.samples.clear()
    if options.metrics_url:
        try:
            _Run.metrics_before = server_metrics.scrape(options.metrics_url)
        except OSError as exc:
            _Run.metrics_note = f"metrics endpoint {options.metrics_url} unreadable: {exc}"
    try:
        _Run.server_config = _server_config(environment.host or "", options.model)
    except Exception as exc:  # the gate still judges without it
        _Run.server_config = ""
        print(f"note: could not read the model config for the baseline: {exc}", file=sys.stderr)
    gevent.spawn(_sample, environment)


def _summary(environment: Environment, images: str) -> gate.RunSummary:
    stats = environment.stats.total
    return gate.RunSummary(
        requests=stats.num_requests,
        failures=stats.num_failures,
        throughput_rps=float(stats.total_rps),
        p50_ms=float(stats.get_response_time_percentile(0.5) or 0.0),
        p95_ms=float(stats.get_response_time_percentile(0.95) or 0.0),
        p99_ms=float(stats.get_response_time_percentile(0.99) or 0.0),
        duration_s=max(0.0, stats.last_request_timestamp - stats.start_time)
        if stats.last_request_timestamp
        else 0.0,
        images=image_mix(images),
        server_config=_Run.server_config,
    )


@events.quitting.add_listener
def _enforce_slos(environment: Environment, **_kwargs: Any) -> None:
    """Judge the run once, where its totals are: the master, or a single process.

    The verdict sets the exit code explicitly, in every case: Locust's own default (exit 1
    on any failed request) would override a failure-ratio objective that tolerates some.
    Workers hold no totals and are not judged; they exit 0.
    """
    options = environment.parsed_options
    if options is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        environment.process_exit_code = gate.EXIT_PASSED
        return
    run = _summary(environment, options.images)
    try:
        baseline = gate.load_baseline(Path(options.baseline)) if options.baseline else None
    except ValueError as exc:
        print(f"SLO gate COULD NOT RUN: {exc}")
        environment.process_exit_code = gate.EXIT_COULD_NOT_RUN
        return
    objectives = gate.Objectives(
        p50_ms=options.slo_p50_ms, p95_ms=options.slo_p95_ms, p99_ms=options.slo_p99_ms,
        max_failure_ratio=options.slo_max_failure_ratio,
        min_throughput_rps=options.slo_min_throughput, baseline=baseline,
        max_throughput_drop=options.max_throughput_drop, max_p99_rise=options.max_p99_rise,
    )  # fmt: skip
    verdict = gate.judge(run, objectives)
    print("\n".join(verdict.lines()), flush=True)
    if options.save_baseline and run.ran:
        gate.save_baseline(run, Path(options.save_baseline))
        print(f"baseline saved: {options.save_baseline}")
    if options.report:
        _write_report(environment, verdict, run, Path(options.report))
    environment.process_exit_code = verdict.exit_code


def _user_arguments(argv: list[str]) -> list[str]:
    """The command line as the user gave it: without the locustfile that the
    ``tvision-loadtest`` wrapper adds."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-f", "--locustfile"):
            skip = True
        else:
            kept.append(arg)
    return kept


def _write_report(
    environment: Environment, verdict: gate.Verdict, run: gate.RunSummary, path: Path
) -> None:
    options = environment.parsed_options
    loads = None
    note = _Run.metrics_note
    if options.metrics_url and _Run.metrics_before is not None:
        try:
            loads = server_metrics.difference(
                _Run.metrics_before, server_metrics.scrape(options.metrics_url)
            )
        except OSError as exc:
            note = f"metrics endpoint {options.metrics_url} unreadable: {exc}"
    page = report.render_html(
        verdict, run, _Run.samples, loads, host=environment.host or "",
        command=shlex.join(["tvision-loadtest", *_user_arguments(sys.argv[1:])]),
        ensemble=options.model, server_note=note,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    print(f"report: {path}")
