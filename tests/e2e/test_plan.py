"""``tvision plan``: the capacity arithmetic, and the command measuring on this machine."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import run_tvision
from tvision.plan import SERVING_CORES, TARGET_UTILISATION, plan_rows


def test_cores_follow_the_measured_cost_and_pods_the_gpu_or_the_core_cap() -> None:
    (row,) = plan_rows([1000], mean_ms=6.0, gpu_img_s=4000, max_cores_per_pod=32)
    # 1000 img/s x 6 ms = 6 busy cores, planned at 75%: 8 preprocessing instances + 1.
    assert row.pods == 1 and row.preprocess_instances == math.ceil(6 / TARGET_UTILISATION)
    assert row.cores_per_pod == row.preprocess_instances + SERVING_CORES
    assert row.gpu_utilisation == pytest.approx(0.25)
    (gpu_bound,) = plan_rows([9000], mean_ms=0.5, gpu_img_s=4000, max_cores_per_pod=32)
    assert gpu_bound.pods == 3  # the GPU's 4000 img/s sets the count
    (cpu_bound,) = plan_rows([4000], mean_ms=10.0, gpu_img_s=4000, max_cores_per_pod=9)
    # 40 busy cores / 75% = 53.3 cores, at most 8 preprocessing cores a pod: 7 pods.
    assert cpu_bound.pods == 7 and cpu_bound.cores_per_pod <= 9


def test_plan_measures_here_and_says_what_it_did_not_measure(tmp_path) -> None:
    out = tmp_path / "plan.json"
    completed = run_tvision(
        "plan", "--rate", "200", "800", "--gpu-img-s", "1000", "--gpu-source", "a stand-in",
        "--repeats", "1", "--json", str(out), timeout_s=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "measured here" in completed.stdout
    assert "NOT measured here (a stand-in)" in completed.stdout
    plan = json.loads(out.read_text())
    assert len(plan["costs"]) >= 10 and all(c["ms_per_image"] > 0 for c in plan["costs"])
    # The 12 MP phone photo costs more than a 640x480 JPEG.
    costs = {cost["name"]: cost["ms_per_image"] for cost in plan["costs"]}
    phone = next(ms for name, ms in costs.items() if "PHONE" in name)
    small = next(ms for name, ms in costs.items() if "640x480 JPEG" in name)
    assert phone > 3 * small
    assert [row["rate_img_s"] for row in plan["rows"]] == [200, 800]
    assert plan["rows"][1]["preprocess_instances"] >= plan["rows"][0]["preprocess_instances"]


def test_plan_refuses_a_rate_that_is_not_positive() -> None:
    completed = run_tvision("plan", "--rate", "0", timeout_s=60)
    assert completed.returncode == 2 and "must be positive" in completed.stderr


def test_the_dali_plan_costs_only_what_stays_on_the_cpu(monkeypatch) -> None:
    """The DALI path's cost per image is the intake's check alone: counted with spies on
    the real intake and the real python decode (both still run the real code)."""
    from tvision.plan import make_plan, render_plan
    from tvision_export.triton_models.dali_intake import DaliIntake
    from tvision_export.triton_models.preprocess import ImagePreprocessor

    calls = {"check": 0, "decode": 0}
    check, decode = DaliIntake.batch, ImagePreprocessor.decode

    def counted_check(self, items):
        calls["check"] += 1
        return check(self, items)

    def counted_decode(self, data, position=0):
        calls["decode"] += 1
        return decode(self, data, position)

    monkeypatch.setattr(DaliIntake, "batch", counted_check)
    monkeypatch.setattr(ImagePreprocessor, "decode", counted_decode)
    plan = make_plan([1000], "gpu", 4890, "a stand-in", repeats=1, preprocess="dali")
    assert calls == {"check": 2 * len(plan.costs), "decode": 0}  # warm-up and one repeat
    text = render_plan(plan)
    assert "DALI path: the intake's check" in text
    assert "decode, resize and classifier together" in text
    with pytest.raises(ValueError, match="needs the gpu target"):
        make_plan([1000], "cpu", preprocess="dali")
