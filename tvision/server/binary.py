"""The real ``tritonserver`` binary that ships in the ``nvidia-pytriton`` wheel.

Only the binary, its libraries and the python backend are used; PyTriton's Python API is
not. This module finds the binary, prepares a backend directory with the stub for the
running interpreter, and sets the library and executable paths the stub needs.

The server (and the edge's nginx) is started through a small exec wrapper
(``EXEC_WRAPPER``) that sets PR_SET_PDEATHSIG, not through ``preexec_fn`` (unsafe in a
process with threads, such as one running gRPC).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from tvision.server.errors import ServerError

# Run by a fresh interpreter between fork and the server: ask for SIGTERM when the launching
# process dies (even by SIGKILL), so a killed ``tvision serve`` or test run cannot orphan a
# server; give up if the launcher already died; then become the server.
EXEC_WRAPPER = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def wrapped(command: list[str]) -> list[str]:
    """``command`` run through EXEC_WRAPPER: it dies with this process."""
    return [sys.executable, "-S", "-c", EXEC_WRAPPER, str(os.getpid()), *command]


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServerError(
            "the embedded Triton server needs the nvidia-pytriton package: "
            "pip install 'nvidia-pytriton==0.7.0'"
        ) from exc
    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    return _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def prepare_backend_dir(destination: Path) -> Path:
    """Copy the python backend and the stub for this interpreter's version into place.

    Raises:
        ServerError: the wheel has no stub for this Python version.
    """
    triton_dir = _pytriton_dir() / "tritonserver"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton_dir / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(
            f"nvidia-pytriton ships no python backend stub for Python {python_version}"
        )
    backend = destination / "python"
    shutil.copytree(triton_dir / "backends" / "python", backend, dirs_exist_ok=True)
    shutil.copy2(stub, backend / "triton_python_backend_stub")
    return destination


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the binary and the python-backend stub need."""
    env = dict(os.environ if base is None else base)
    libs = _pytriton_dir().parent / "nvidia_pytriton.libs"
    python_libdir = sysconfig.get_config_var("LIBDIR") or ""
    library_path = [python_libdir, str(libs)]
    if env.get("LD_LIBRARY_PATH"):
        library_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(part for part in library_path if part)
    # The stub's embedded interpreter finds its site-packages through the python on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
