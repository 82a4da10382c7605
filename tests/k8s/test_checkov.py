"""checkov on every rendered overlay: no failed check, and every skip says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.rendering import LOADTEST, OVERLAYS, render, render_text

# `make test` installs checkov into its own environment beside the project's.
CHECKOV = Path(sys.executable).parent.parent / "tools" / "checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run `make test` (it installs it)")
    return CHECKOV


@pytest.mark.parametrize("target", [*OVERLAYS, LOADTEST])
def test_checkov_passes_every_check_or_skips_it_with_a_reason(checkov, target, tmp_path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render_text(target))
    completed = subprocess.run(
        [str(checkov), "--file", str(rendered), "--framework", "kubernetes", "--output", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(completed.stdout)
    results = report["results"]
    failed = [
        f"{check['check_id']} {check['check_name']} ({check['resource']})"
        for check in results["failed_checks"]
    ]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert report["summary"]["passed"] >= 80, report["summary"]
    for check in results["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} is skipped without a reason"


def test_skips_are_annotations_on_the_objects_they_concern() -> None:
    # A skip is written where a reader of the object sees it, not in a global config.
    for target in (*OVERLAYS, LOADTEST):
        for document in render(target):
            annotations = document["metadata"].get("annotations", {})
            skips = [key for key in annotations if key.startswith("checkov.io/skip")]
            if skips:
                assert document["kind"] in ("Deployment", "Job"), (target, document["kind"])
                assert all("=" in annotations[key] for key in skips)
