"""What a server leaves on the machine: python-backend shared-memory regions and a work
directory, and their removal.

Each server's python-backend shared-memory regions and temporary directory carry its
launcher's pid; those of launchers that no longer run (killed, say, by SIGKILL) are
removed at the next start, and a server's own at its stop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "tvision_"
WORK_DIR_PREFIX = "tvision-server-"
_started = 0  # servers started by this process, for unique shared-memory prefixes


def new_shm_prefix() -> str:
    """The python backend's region prefix for the next server this process starts."""
    global _started
    _started += 1
    return f"{SHM_PREFIX}{os.getpid()}_{_started}_"


def new_work_dir() -> Path:
    """A fresh temporary directory for one server, named after this process."""
    return Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))


def remove_regions(prefix: str) -> None:
    """Remove one server's own regions (at its stop)."""
    for region in SHM_DIR.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            region.unlink()


def remove_stale_shm_regions() -> list[str]:
    """Remove python-backend regions of servers whose launching process has died."""
    removed = []
    for region in SHM_DIR.glob(f"{SHM_PREFIX}*"):
        owner = region.name[len(SHM_PREFIX) :].split("_", 1)[0]
        if owner.isdigit() and not process_alive(int(owner)):
            with contextlib.suppress(OSError):
                region.unlink()
                removed.append(region.name)
    return removed


def remove_stale_work_dirs() -> list[str]:
    """Remove the temporary directories of launchers that died without stopping (SIGKILL)."""
    removed = []
    for work_dir in Path(tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*"):
        owner = work_dir.name[len(WORK_DIR_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not process_alive(int(owner)):
            shutil.rmtree(work_dir, ignore_errors=True)
            removed.append(work_dir.name)
    return removed


def process_alive(pid: int) -> bool:
    """True while a process with this pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
