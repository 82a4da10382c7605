"""``tvision-loadtest``: Locust's command line with this package's locustfile.

Every Locust option works (``--headless``, ``-u``, ``-r``, ``-t``, ``--processes``,
``--master``/``--worker``, ``--csv``, ...), plus the tvision options in
``tvision-loadtest --help`` (SLOs, ``--baseline``, ``--save-baseline``, ``--report``,
``--images``). ``--ramp`` adds the step ramp shape.
"""

from __future__ import annotations

import os
import sys

from tvision_loadtest import LOCUSTFILE, SHAPES


def locust_argv(argv: list[str]) -> list[str]:
    """The ``locust`` arguments for ``tvision-loadtest ARGV``."""
    files = str(LOCUSTFILE)
    if "--ramp" in argv:
        argv = [arg for arg in argv if arg != "--ramp"]
        files += f",{SHAPES}"
    return ["locust", "-f", files, *argv]


def main(argv: list[str] | None = None) -> None:
    args = locust_argv(sys.argv[1:] if argv is None else argv)
    # Become Locust: its exit code (the gate's verdict) is this command's.
    os.execvp(sys.executable, [sys.executable, "-m", *args])


if __name__ == "__main__":
    main()
