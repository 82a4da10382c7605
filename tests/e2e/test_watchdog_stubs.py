"""The watchdog's count of stub processes, on real processes it finds under a parent.

Only ``server.process`` of the watched server is used here, so the server is a stand-in
holding a real parent process; the stubs are real processes named as Triton names them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import psutil

from tvision.server.watchdog import StubWatchdog

STUB = "triton_python_backend_stub"


def _children(parent: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(psutil.Process(parent.pid).children(recursive=True)) < count:
        assert time.monotonic() < deadline, "the child processes did not start"
        time.sleep(0.05)


def test_a_stub_not_yet_showing_its_arguments_is_not_a_crash(tmp_path) -> None:
    """A stub read while it starts can show no arguments on its command line. It once
    raised IndexError in the watchdog's thread, which ended the watchdog for good (a
    fresh-clone run: the model loaded again was never watched)."""
    model_py = tmp_path / "demo_preprocess" / "1" / "model.py"
    model_py.parent.mkdir(parents=True)
    model_py.write_text("import time\ntime.sleep(60)\n")
    script = (
        f"(exec -a {STUB} {sys.executable} {model_py}) & "  # a started stub: its model.py
        f"(exec -a {STUB} cat) & "  # no arguments, as a stub read while it starts
        "wait"
    )
    parent = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE)
    try:
        _children(parent, 2)
        watchdog = StubWatchdog(server=SimpleNamespace(process=parent))  # type: ignore[arg-type]
        stubs = watchdog.stubs()
        assert list(stubs) == ["demo_preprocess"] and len(stubs["demo_preprocess"]) == 1
        assert watchdog.expected == {"demo_preprocess": 1}
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait(timeout=10)
