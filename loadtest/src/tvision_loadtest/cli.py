"""``tvision-loadtest``: Locust's command line with this package's locustfile.

Every Locust option works (``--headless``, ``-u``, ``-r``, ``-t``, ``--processes``,
``--master``/``--worker``, ``--csv``, ...), plus the tvision options (SLOs,
``--baseline``, ``--save-baseline``, ``--report``, ``--images``, ``--metrics-url``).
``--ramp`` adds the step ramp shape.

``tvision-loadtest --help`` prints the tvision options first, each with its default and
environment variable, then Locust's own: Locust answers ``--help`` before it loads the
locustfile whose hook adds the tvision options, so its help alone never lists them.
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


def help_text() -> str:
    """The tvision options, with their defaults and environment variables."""
    from locust.argument_parser import LocustArgumentParser

    from tvision_loadtest import flags
    from tvision_loadtest.shapes import DEFAULTS

    parser = LocustArgumentParser(
        prog="tvision-loadtest",
        usage="tvision-loadtest [tvision options] [Locust options]",
        description="Locust's command line with the tvision locustfile: a load test and "
        "release gate (exit 0 passed, 1 an objective missed, 2 could not run).",
        add_help=False,
        add_env_var_help=False,
        add_config_file_help=False,
    )
    flags.add_arguments(parser)
    ramp = parser.add_argument_group("tvision ramp")
    ramp.add_argument(
        "--ramp", action="store_true",
        help="step the users up: TVISION_RAMP_STEP_USERS more (default "
        f"{DEFAULTS['TVISION_RAMP_STEP_USERS']}) every TVISION_RAMP_HOLD_S seconds (default "
        f"{DEFAULTS['TVISION_RAMP_HOLD_S']}), TVISION_RAMP_STEPS times (default "
        f"{DEFAULTS['TVISION_RAMP_STEPS']}), then stop; in place of -u, -r and -t",
    )  # fmt: skip
    return parser.format_help()


def print_help() -> None:
    """Ours first, then Locust's own options (its parser, without the tvision hook)."""
    from locust.argument_parser import get_parser

    print(help_text())
    print("Locust's own options follow.\n")
    get_parser().print_help()


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    if "-h" in given or "--help" in given:
        print_help()
        sys.exit(0)
    args = locust_argv(given)
    # Become Locust: its exit code (the gate's verdict) is this command's.
    os.execvp(sys.executable, [sys.executable, "-m", *args])


if __name__ == "__main__":
    main()
