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

This file is only what Locust loads: the users and the hooks. The work is in importable
modules: ``flags`` (options and defaults), ``preflight`` (the images, server and model
checked before any load), ``images``, ``users``, ``recording`` (the run's
samples and server state), ``judging`` (the gate, baseline and report at the end), with
``server_config``, ``gate``, ``report`` and ``server_metrics`` beneath them.
"""

from __future__ import annotations

# gRPC must cooperate with gevent before anything opens a channel, or calls run one at a time.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

from locust import events  # noqa: E402

from tvision_loadtest import flags, judging, preflight, recording  # noqa: E402
from tvision_loadtest.users import ClassifyUser  # noqa: E402

# Locust runs the User classes it finds in this module.
__all__ = ["ClassifyUser"]

events.init_command_line_parser.add_listener(flags.add_arguments)
events.init.add_listener(preflight.on_init)
events.test_start.add_listener(recording.on_test_start)
events.quitting.add_listener(judging.on_quitting)
