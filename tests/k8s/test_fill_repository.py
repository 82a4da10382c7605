"""The model-from-pvc init container's script, run for real: the AWS CLI (as in the init
container's image, here from PyPI) copying a snapshot from a real S3-compatible server on
loopback onto a directory standing in for the volume."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.rendering import K8S_DIR
from tvision_export import snapshots

pytestmark = pytest.mark.e2e

SCRIPT = K8S_DIR / "components" / "model-from-pvc" / "fill-repository.sh"
AWS = Path(sys.executable).parent.parent / "tools" / "awscli" / "bin" / "aws"


def _fill(source: str, volume: Path, endpoint: str, pod: str) -> subprocess.CompletedProcess[str]:
    if not AWS.exists():
        pytest.fail(f"the AWS CLI is not installed at {AWS}: run `make test` (it installs it)")
    environment = {
        **os.environ,
        "PATH": f"{AWS.parent}{os.pathsep}{os.environ['PATH']}",
        "TVISION_SNAPSHOT_SOURCE": source,
        "TVISION_REPOSITORY_DIR": str(volume),
        "AWS_ENDPOINT_URL": endpoint,
        "HOSTNAME": pod,
    }
    return subprocess.run(
        ["sh", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def _same_tree(left: Path, right: Path) -> bool:
    compared = filecmp.dircmp(left, right)
    if compared.left_only or compared.right_only or compared.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, compared.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(left / name, right / name) for name in compared.common_dirs)


@pytest.fixture(scope="module")
def store(s3_endpoint: str) -> snapshots.StoreLocation:
    root = snapshots.StoreLocation("fill", "efficientnet_lite0", s3_endpoint)
    fs = snapshots.filesystem(root)
    if not fs.exists("fill"):
        fs.mkdir("fill")
    return root


def test_a_complete_snapshot_is_copied_once(store, s3_endpoint, cpu_repository, tmp_path) -> None:
    snapshot = snapshots.push(cpu_repository, store).location
    volume = tmp_path / "volume"
    volume.mkdir()
    first = _fill(snapshot.uri(), volume, s3_endpoint, "pod-a")
    assert first.returncode == 0, first.stderr
    copy = volume / snapshot.snapshot_id
    assert (copy / "tvision-snapshot.json").is_file()
    (copy / "tvision-snapshot.json").unlink()  # the store adds only the manifest
    assert _same_tree(cpu_repository, copy)
    (copy / "tvision-snapshot.json").write_text("{}")
    assert [path.name for path in volume.iterdir()] == [snapshot.snapshot_id]  # no partial

    again = _fill(snapshot.uri(), volume, s3_endpoint, "pod-b")
    assert again.returncode == 0 and "already on the volume" in again.stdout


def test_an_incomplete_snapshot_is_refused_and_nothing_is_left(
    store, s3_endpoint, cpu_repository, tmp_path
) -> None:
    # An interrupted push: the files are there, the manifest (written last) is not.
    partial = store.snapshot("0123456789abcdef")
    fs = snapshots.filesystem(store)
    fs.put(str(cpu_repository) + "/", partial.uri() + "/", recursive=True)
    volume = tmp_path / "volume"
    volume.mkdir()
    completed = _fill(partial.uri(), volume, s3_endpoint, "pod-a")
    assert completed.returncode == 1
    assert "not a complete snapshot" in completed.stderr
    assert list(volume.iterdir()) == []
