"""Serving what the model was validated with: the default decode strategy against the
model's reference preprocessing, on real photos at the sizes where it is hardest.

The CI subset: the bundled sample photos at 512x512, 683x512, 768x512 and 1365x1024, a
4032x3024 phone photo stored sideways with EXIF orientation 6, and a PNG, sent through
the real server and compared by ``tvision validate`` with its own default thresholds.
The broad set (332 photos) is ``make fidelity``.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.helpers import ROOT, run_tvision
from tvision import fidelity
from tvision.validate import DEFAULT_MAX_PROBABILITY_DIFF, DEFAULT_MIN_TOP1_AGREEMENT
from tvision_export.contract import DEFAULT_DECODE
from tvision_export.samples import sample_photos
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hard_sizes(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("fidelity")
    for photo in sample_photos():
        for name, data in fidelity.variants(photo.path, sizes="quirks").items():
            (directory / name).write_bytes(data)
    return directory


def test_served_default_passes_validate_on_the_hardest_sizes(
    triton_server, cpu_repository, hard_sizes
) -> None:
    completed = run_tvision(
        "validate", "--repository", str(cpu_repository), "--url", triton_server.grpc_url,
        "--images", str(hard_sizes), timeout_s=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert f"JPEG decode strategy of the repository: {DEFAULT_DECODE}" in completed.stdout
    assert "PASS: top-1 agreement 100.0%" in completed.stdout
    assert f"of {len(list(hard_sizes.iterdir()))} images" in completed.stdout


def _readme_bound() -> tuple[float, float]:
    """The README's "The bound" line: (top-1 agreement as a fraction, max dp)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"\*\*The bound\*\*: top-1 agreement ≥ ([\d.]+)% and every image's max dp ≤ ([\d.]+)",
        readme,
    )
    assert found, "the README states no bound"
    return float(found.group(1)) / 100, float(found.group(2))


def test_fidelity_measures_each_strategy_against_the_reference(cpu_export, hard_sizes) -> None:
    images = sorted(hard_sizes.glob("coffee-*")) + sorted(hard_sizes.glob("china-*"))
    report = fidelity.measure(
        DEFAULT_SPEC,
        cpu_export.written.classifier_onnx,
        images,
        ["exact", DEFAULT_DECODE],
        DEFAULT_DECODE,
    )
    by_name = {result.strategy: result for result in report.results}
    assert by_name["exact"].images == len(images) == 12
    assert by_name["exact"].top1_agreement == 1.0
    assert max(by_name["exact"].diffs) < 0.01  # the same pixels, up to crop-box rounding
    assert by_name[DEFAULT_DECODE].meets_bound(), by_name[DEFAULT_DECODE].diffs
    # The bound judged here and by `tvision validate` is the one the README states.
    assert _readme_bound() == (DEFAULT_MIN_TOP1_AGREEMENT, DEFAULT_MAX_PROBABILITY_DIFF)
    # The 12 MP phone photos are decoded at half size: cheaper than the exact decode.
    costs = fidelity.cost_ratios(report, by_name[DEFAULT_DECODE])
    assert costs["short side >= 2000"] < 0.8, costs
    text = fidelity.render(report)
    assert "(default)" in text and "meets the bound" in text
