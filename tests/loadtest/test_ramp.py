"""``tvision-loadtest --ramp`` end to end against the session's real server: the step
ramp (README: "`--ramp`, steps set by `TVISION_RAMP_STEP_USERS`, `TVISION_RAMP_STEPS`,
`TVISION_RAMP_HOLD_S`") sets the users, not ``--users``, stops the run itself, and the
report gets its throughput-against-users chart."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest

from tvision.loadtest_run import locust_command

pytestmark = pytest.mark.e2e


def test_the_ramp_steps_the_users_and_ends_the_run(triton_server, tmp_path) -> None:
    prefix, report = tmp_path / "ramp", tmp_path / "ramp.html"
    step_users, steps, hold_s = 1, 2, 6
    run_time_s = 60  # --run-time: the ramp must end the run long before this
    completed = subprocess.run(
        locust_command(
            triton_server.grpc_url, 4, 4, f"{run_time_s}s", "--ramp",
            "--csv", str(prefix), "--csv-full-history", "--report", str(report),
        ),
        capture_output=True, text=True, timeout=run_time_s + 60, check=False,
        env={
            **os.environ, "PYTHONUNBUFFERED": "1",
            "TVISION_RAMP_STEP_USERS": str(step_users), "TVISION_RAMP_STEPS": str(steps),
            "TVISION_RAMP_HOLD_S": str(hold_s),
        },
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    users = [int(row["User Count"]) for row in rows]
    # Each level held, in order, and never the 4 users --users asked for.
    levels = [step_users * (step + 1) for step in range(steps)]
    held = sorted({count for count in users if count > 0})
    assert held == levels, users
    first_at = {level: users.index(level) for level in levels}
    assert first_at[levels[0]] < first_at[levels[1]]
    # The ramp ended the run: its steps last steps x hold_s (12 s); the history has a row
    # a second, so the run took well under --run-time (bound: half of it, a wide margin
    # for a loaded machine's start-up and stop).
    timestamps = [int(row["Timestamp"]) for row in rows]
    assert timestamps[-1] - timestamps[0] < run_time_s / 2, timestamps
    assert int(rows[-1]["Total Request Count"]) > 0
    # The report's "Over time" section has the third chart, throughput against users.
    html = report.read_text(encoding="utf-8")
    over_time = html.split("<h2>Over time</h2>", 1)[1].split("<h2", 1)[0]
    assert over_time.count("<img") == 3
