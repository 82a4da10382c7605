"""The exit codes of every ``tvision`` command: one table (README, "Exit codes").

Named as ``tvision_loadtest.gate`` names its own, so that a pipeline can tell a check that
failed from a command that never ran. argparse already exits with 2 for a bad flag; every
other refusal to run uses the same code.
"""

from __future__ import annotations

# Done, and every check the command ran passed.
EXIT_OK = 0
# It ran, and a check failed: verify found problems, validate missed its bounds, the
# validation of an export or import missed its tolerance, classify had a failed image.
EXIT_CHECK_FAILED = 1
# It could not run, or not go on: bad or contradictory flags, a missing file, an
# unreachable or refusing object store or server, a server that could not start or died.
EXIT_COULD_NOT_RUN = 2

MEANINGS = {
    EXIT_OK: "done; every check passed",
    EXIT_CHECK_FAILED: "it ran, and a check failed",
    EXIT_COULD_NOT_RUN: "it could not run: usage or environment",
}
