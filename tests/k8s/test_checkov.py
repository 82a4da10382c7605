"""checkov on every rendered overlay: no failed check, and every skip says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.rendering import LOADTEST, OVERLAYS, render, render_text

# `make test` installs checkov into its own environment beside the project's.
CHECKOV = Path(sys.executable).parent.parent / "tools" / "checkov" / "bin" / "checkov"


TARGETS = (*OVERLAYS, LOADTEST)


def _file_name(target: str) -> str:
    return target.replace("/", "-") + ".yaml"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run over every target's rendered manifests, a file each (checkov's own
    start is most of its time: one run, not one per target)."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run `make test` (it installs it)")
    directory = tmp_path_factory.mktemp("rendered")
    for target in TARGETS:
        (directory / _file_name(target)).write_text(render_text(target))
    completed = subprocess.run(
        [str(CHECKOV), "--directory", str(directory), "--framework", "kubernetes",
         "--output", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return json.loads(completed.stdout)


@pytest.mark.parametrize("target", TARGETS)
def test_checkov_passes_every_check_or_skips_it_with_a_reason(report, target) -> None:
    def of_target(kind: str) -> list[dict[str, Any]]:
        checks = report["results"][kind]
        return [check for check in checks if check["file_path"].endswith(_file_name(target))]

    failed = [
        f"{check['check_id']} {check['check_name']} ({check['resource']})"
        for check in of_target("failed_checks")
    ]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert len(of_target("passed_checks")) >= 80, report["summary"]
    for check in of_target("skipped_checks"):
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} is skipped without a reason"


def test_skips_are_annotations_on_the_objects_they_concern() -> None:
    # A skip is written where a reader of the object sees it, not in a global config.
    for target in TARGETS:
        for document in render(target):
            annotations = document["metadata"].get("annotations", {})
            skips = [key for key in annotations if key.startswith("checkov.io/skip")]
            if skips:
                assert document["kind"] in ("Deployment", "Job"), (target, document["kind"])
                assert all("=" in annotations[key] for key in skips)
