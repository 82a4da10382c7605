"""The object-storage promises of the README's "Model repositories in object storage"
that tests/e2e/test_object_storage.py does not cover: ``serve`` refusing an incomplete
snapshot, a resumed push re-uploading a damaged partial object, objects copied inside the
store, ``gc --protect``, gc leaving incomplete snapshots, and the standard endpoint
variables. Against the session's S3 stand-in (moto's server on loopback)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from tests.e2e.test_object_storage import _store, _tvision
from tvision_export import snapshots
from tvision_export.options import ServingOptions
from tvision_export.repository import write_version
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e


def _make_incomplete(location: snapshots.StoreLocation) -> None:
    """What an interrupted push leaves: every object, and no manifest (written last)."""
    fs = snapshots.filesystem(location)
    fs.rm_file(location.key(snapshots.SNAPSHOT_MANIFEST))
    fs.invalidate_cache()


def _repository(default_source, tmp_path: Path, queue_size: int) -> Path:
    local = tmp_path / f"repo{queue_size}"
    write_version(
        local, DEFAULT_SPEC.name, default_source, ServingOptions(max_queue_size=queue_size)
    )
    return local


def _files(repository: Path) -> dict[str, str]:
    """Every file's path and sha256, as the snapshot's manifest lists them."""
    return {
        path.relative_to(repository).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(repository.rglob("*"))
        if path.is_file()
    }


def test_serve_refuses_an_incomplete_snapshot(s3_endpoint, cpu_repository) -> None:
    root = _store(s3_endpoint, "serve-incomplete")
    result = snapshots.push(cpu_repository, root)
    _make_incomplete(result.location)
    started = time.monotonic()
    served = _tvision(
        "serve", "--repository", result.location.uri(), "--endpoint-url", s3_endpoint,
        timeout_s=120,
    )  # fmt: skip
    assert served.returncode == 2, served.stdout + served.stderr
    assert "incomplete" in served.stderr and result.location.uri() in served.stderr
    assert "Traceback" not in served.stderr
    assert "ready:" not in served.stderr
    # Refused before Triton starts: a start would take its repository load, far longer.
    assert time.monotonic() - started < 60


def test_a_resumed_push_reuploads_a_damaged_partial_object(s3_endpoint, cpu_repository) -> None:
    root = _store(s3_endpoint, "resume-damaged")
    first = snapshots.push(cpu_repository, root)
    total = first.uploaded_files
    _make_incomplete(first.location)
    fs = snapshots.filesystem(root)
    labels = f"{DEFAULT_SPEC.name}/labels.txt"
    key = first.location.key(labels)
    intact = (cpu_repository / labels).read_bytes()
    fs.pipe_file(key, intact.replace(b"espresso", b"ESPRESSO"))  # same size, other bytes
    fs.invalidate_cache()
    resumed = snapshots.push(cpu_repository, root)
    assert resumed.location == first.location
    assert (resumed.uploaded_files, resumed.skipped_files) == (1, total - 1)
    assert resumed.uploaded_bytes == len(intact)
    fs.invalidate_cache()
    assert fs.cat_file(key) == intact
    assert snapshots.verify_snapshot(resumed.location) == []


def test_files_an_earlier_snapshot_holds_are_copied_inside_the_store(
    s3_endpoint, default_source, tmp_path
) -> None:
    root = _store(s3_endpoint, "copies")
    old, new = (_repository(default_source, tmp_path, size) for size in (21, 22))
    held = set(_files(old).values())
    expected_copies = sum(sha in held for sha in _files(new).values())
    assert 0 < expected_copies < len(_files(new))  # the model is shared, the configs differ
    first = snapshots.push(old, root)
    assert first.copied_files == 0
    second = snapshots.push(new, root)
    assert second.location != first.location
    assert second.copied_files == expected_copies
    assert second.uploaded_files == len(_files(new)) - expected_copies
    assert snapshots.verify_snapshot(second.location) == []


def test_gc_protect_keeps_a_snapshot_and_leaves_incomplete_ones(
    s3_endpoint, default_source, tmp_path
) -> None:
    root = _store(s3_endpoint, "collect-protect")
    uris = []
    for size in (31, 32, 33, 34):  # oldest first
        uris.append(snapshots.push(_repository(default_source, tmp_path, size), root).location)
        time.sleep(1.1)  # manifests record creation to the second
    incomplete = uris.pop()  # the newest, its push "still in progress"
    _make_incomplete(incomplete)
    gc = ("repo", "gc", root.uri(), "--keep", "1", "--endpoint-url", s3_endpoint)
    # The control: without --protect the two older complete ones would go.
    control = _tvision(*gc, "--dry-run")
    assert control.returncode == 0, control.stderr
    would = {line for line in control.stdout.splitlines() if line.startswith("would remove")}
    assert would == {f"would remove {uris[0].uri()}", f"would remove {uris[1].uri()}"}
    collected = _tvision(*gc, "--protect", uris[0].uri())
    assert collected.returncode == 0, collected.stderr
    removed = {line for line in collected.stdout.splitlines() if line.startswith("removed")}
    assert removed == {f"removed {uris[1].uri()}"}
    infos = {info.location.uri(): info.complete for info in snapshots.list_snapshots(root)}
    assert infos == {uris[0].uri(): True, uris[2].uri(): True, incomplete.uri(): False}
    # The incomplete snapshot keeps every object it had.
    fs = snapshots.filesystem(root)
    fs.invalidate_cache()
    assert len(fs.find(incomplete.key())) == len(_files(tmp_path / "repo34"))


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_the_standard_endpoint_variables_are_honoured(
    s3_endpoint, cpu_repository, variable
) -> None:
    root = _store(s3_endpoint, "endpoint-variables")
    snapshot = snapshots.push(cpu_repository, root).location.snapshot_id
    plain_uri = f"s3://{root.bucket}/{root.prefix}"
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    # AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL (botocore's order), so with the _S3
    # one set right the general one may point anywhere.
    env = {**base, variable: s3_endpoint}
    if variable == "AWS_ENDPOINT_URL_S3":
        env["AWS_ENDPOINT_URL"] = unreachable
    listed = _tvision("repo", "list", plain_uri, env=env)
    assert listed.returncode == 0, listed.stderr
    assert snapshot in listed.stdout
    # The control: the same command with the variable pointing nowhere fails, naming it.
    refused = _tvision("repo", "list", plain_uri, env={**base, variable: unreachable})
    assert refused.returncode != 0 and snapshot not in refused.stdout
    assert "127.0.0.1:9" in refused.stderr and "Traceback" not in refused.stderr
