"""A ramp for the load test: ``tvision-loadtest --ramp ...``.

Steps up the user count, holds each level, then stops; the step size and hold time come
from the environment so a release pipeline can tune them without editing code.
"""

from __future__ import annotations

import os

from locust import LoadTestShape


class StepRamp(LoadTestShape):
    step_users = int(os.environ.get("TVISION_RAMP_STEP_USERS", "4"))
    steps = int(os.environ.get("TVISION_RAMP_STEPS", "4"))
    hold_s = float(os.environ.get("TVISION_RAMP_HOLD_S", "30"))

    def tick(self) -> tuple[int, float] | None:
        run_time_s = self.get_run_time()
        step = int(run_time_s // self.hold_s)
        if step >= self.steps:
            return None
        users = self.step_users * (step + 1)
        return users, float(self.step_users)
