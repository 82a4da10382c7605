"""A real Prometheus for the tests: Debian's package (installed by `make test`), on
loopback with its own config and data directory, scraping one target each second with the
namespace and pod labels the Prometheus Operator would add."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tvision.server import ServerPorts

NAMESPACE, POD = "tvision", "tvision-triton-7d9c-abcde"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test` (it installs Debian's prometheus)")
    return found


class Prometheus:
    def __init__(self, work_dir: Path, target: str, rule_files: tuple[Path, ...] = ()) -> None:
        self.port = ServerPorts.free().http
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": "tvision",
                    "static_configs": [
                        {"targets": [target], "labels": {"namespace": NAMESPACE, "pod": POD}}
                    ],
                }
            ],
        }
        (work_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (work_dir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={work_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={work_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start: {work_dir / 'prometheus.log'}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value_after_next_scrapes(self, expression: str) -> float:
        """The query's single value once two more scrapes have landed."""
        time.sleep(2.5)
        deadline = time.monotonic() + 20
        while True:
            result = self.query(expression)
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(result) == 1, f"expected one series (one pod), got {result}"
        assert result[0]["metric"] == {"pod": POD}
        return float(result[0]["value"][1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def alerts(self) -> dict[str, str]:
        """Each active alert's name and state (pending or firing)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/alerts"
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return {alert["labels"]["alertname"]: alert["state"] for alert in body["data"]["alerts"]}

    def wait_for(self, expression: str, done: Any, timeout_s: float) -> list[dict[str, Any]]:
        """Query until ``done(result)`` holds; the last result. Raises on the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expression)
            if done(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression!r} after {timeout_s} s: {result}")
            time.sleep(0.5)
