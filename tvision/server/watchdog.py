"""The stub watchdog: a python backend stub that died is noticed and its model reloaded.

The server runs in explicit model-control mode, and a watchdog thread notices a python
backend stub that died (Triton 2.51 neither restarts it nor reports it) and reloads its
model, which starts fresh instances; ``TritonServer.healthy()`` is False from the death
until the reload is done, and ``tvision serve --health-port`` answers readiness from it.
Measured by the fault suite (``tests/e2e/test_faults.py``).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tvision_export.contract import PARAM_RELOAD

if TYPE_CHECKING:  # pragma: no cover
    from tvision.server.launcher import TritonServer


@dataclass
class Heal:
    """One stub death the watchdog noticed, and how long the model took to serve again."""

    model: str
    noticed_at: float
    recovered_s: float | None = None
    error: str = ""
    reported: bool = False


@dataclass
class StubWatchdog:
    """Notices a dead python-backend stub and reloads its model (see the module docstring).

    Each model's stub count, as first seen once the server was ready, is what it should
    have; fewer live (non-zombie) stubs means an instance cannot serve.
    """

    server: TritonServer
    interval_s: float = 0.25
    heals: list[Heal] = field(default_factory=list)
    healthy: bool = True

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tvision-watchdog", daemon=True)
        self.expected = {model: len(pids) for model, pids in self.stubs().items()}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def stubs(self) -> dict[str, list[int]]:
        """Live stub processes by model name."""
        import psutil

        process = self.server.process
        found: dict[str, list[int]] = {}
        if process is None:
            return found
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            return found
        for child in children:
            try:
                command = child.cmdline()
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            # The first argument is <repository>/<model>/<version>/model.py. A stub read
            # while it starts can show no arguments yet: it is counted next round.
            if len(command) > 1 and command[0].endswith("triton_python_backend_stub"):
                model = Path(command[1]).parent.parent.name
                found.setdefault(model, []).append(child.pid)
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            live = self.stubs()
            short = [
                model for model, count in self.expected.items() if len(live.get(model, [])) < count
            ]
            if short:
                # An admin may have unloaded the model: its stubs went with it, on purpose.
                states = self.model_states()
                unloaded = [model for model in short if states.get(model, "READY") != "READY"]
                for model in unloaded:
                    del self.expected[model]
                short = [model for model in short if model not in unloaded]
            # A model loaded (again) through model control is watched once it is READY (all
            # its instances, and so all its stubs, are up by then).
            new = [model for model in live if model not in self.expected]
            if new:
                states = self.model_states()
                for model in new:
                    if states.get(model) == "READY":
                        self.expected[model] = len(live[model])
            if not short:
                self.healthy = True
                continue
            self.healthy = False
            for model in short:
                self._reload(model)

    def model_states(self) -> dict[str, str]:
        """Each model's state in the repository index ("READY", "UNAVAILABLE", ...); empty
        when the index cannot be read (then every short model is taken for a dead stub)."""
        import json

        request = urllib.request.Request(
            f"{self.server.triton_http_url}/v2/repository/index",
            data=b"{}",
            method="POST",
            headers=self.server.admin_headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                index = json.loads(reply.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        # One entry per version; a model with any READY version counts as READY.
        states: dict[str, str] = {}
        for entry in index:
            name, state = entry.get("name", ""), entry.get("state", "")
            if states.get(name) != "READY":
                states[name] = state
        return states

    def _reload(self, model: str) -> None:
        """Load the model again with its own config, plus a reload counter, as an override.

        Triton 2.51 reloads a model only when its config changed (an identical override is
        a no-op), so the counter is the change. New instances, with new stubs, replace the
        old ones, and the old instance with the dead stub is unloaded.
        """
        import json

        heal = Heal(model=model, noticed_at=time.monotonic())
        self.heals.append(heal)
        base = f"{self.server.triton_http_url}/v2"
        try:
            with urllib.request.urlopen(f"{base}/models/{model}/config", timeout=30) as reply:
                config = json.loads(reply.read())
            parameters = config.setdefault("parameters", {})
            parameters[PARAM_RELOAD] = {"string_value": str(len(self.heals))}
            body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
            request = urllib.request.Request(
                f"{base}/repository/models/{model}/load",
                data=body,
                method="POST",
                headers=self.server.admin_headers,
            )
            with urllib.request.urlopen(request, timeout=120) as reply:
                reply.read()
        except (urllib.error.URLError, OSError) as exc:
            heal.error = str(exc)
            return
        # The new stubs are up when the load returns; give the old ones time to go.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._stop.is_set():
            if len(self.stubs().get(model, [])) >= self.expected[model]:
                break
            time.sleep(0.1)
        heal.recovered_s = time.monotonic() - heal.noticed_at

    def take_unreported_heals(self) -> list[Heal]:
        """The heals that finished (reloaded, or failed) since the last call, each once:
        what ``tvision serve`` reports. A heal still reloading waits for a later call."""
        finished = [
            heal
            for heal in list(self.heals)
            if not heal.reported and (heal.recovered_s is not None or heal.error)
        ]
        for heal in finished:
            heal.reported = True
        return finished
