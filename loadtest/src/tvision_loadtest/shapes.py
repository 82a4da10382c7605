"""A ramp for the load test: ``tvision-loadtest --ramp ...``.

Steps up the user count, holds each level, then stops; the step size and hold time come
from the environment so a release pipeline can tune them without editing code.
"""

from __future__ import annotations

import os

from locust import LoadTestShape

# The ramp's defaults, each overridden by its environment variable.
DEFAULTS = {"TVISION_RAMP_STEP_USERS": "4", "TVISION_RAMP_STEPS": "4", "TVISION_RAMP_HOLD_S": "30"}


def _setting(name: str) -> str:
    return os.environ.get(name, DEFAULTS[name])


class StepRamp(LoadTestShape):
    step_users = int(_setting("TVISION_RAMP_STEP_USERS"))
    steps = int(_setting("TVISION_RAMP_STEPS"))
    hold_s = float(_setting("TVISION_RAMP_HOLD_S"))

    def tick(self) -> tuple[int, float] | None:
        run_time_s = self.get_run_time()
        step = int(run_time_s // self.hold_s)
        if step >= self.steps:
            return None
        users = self.step_users * (step + 1)
        return users, float(self.step_users)
