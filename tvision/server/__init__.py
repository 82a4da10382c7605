"""The embedded Triton server; ``launcher`` holds it whole until it is split by job."""

from tvision.server.launcher import *  # noqa: F403
from tvision.server.launcher import _EXEC_WRAPPER  # noqa: F401
