"""Model repositories in object storage: push, list, verify, serve and gc from s3://.

Every test runs against a real S3-compatible server on loopback (moto's standalone server,
standing in for S3 or MinIO, which cannot be installed here) and the real tritonserver,
which reads the snapshot natively from s3://.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_tvision
from tvision.server import temporary_server
from tvision_client import Client
from tvision_export import snapshots
from tvision_export.options import ServingOptions
from tvision_export.repository import write_version
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC
from tvision_export.verify import verify_repository

pytestmark = pytest.mark.e2e

SECRET = "tvision-test-secret-never-printed"


def _store(endpoint: str, bucket: str) -> snapshots.StoreLocation:
    root = snapshots.StoreLocation(bucket, "models/prod", endpoint)
    fs = snapshots.filesystem(root)
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    return root


def _tvision(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    completed = run_tvision(*args, timeout_s=timeout_s, cwd=ROOT, env=env)
    assert SECRET not in completed.stdout + completed.stderr  # credentials are never printed
    return completed


def _snapshot_uri(output: str) -> str:
    return next(
        line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("snapshot: ")
    )


def test_push_list_verify_and_serve_a_snapshot(s3_endpoint, cpu_repository) -> None:
    root = _store(s3_endpoint, "serve")
    pushed = _tvision(
        "repo", "push", str(cpu_repository), root.uri(), "--endpoint-url", s3_endpoint
    )
    assert pushed.returncode == 0, pushed.stderr
    uri = _snapshot_uri(pushed.stdout)
    assert uri.startswith(root.uri("snapshots/"))
    assert f"triton --model-repository: s3://{s3_endpoint}/" in pushed.stdout

    again = _tvision("repo", "push", str(cpu_repository), root.uri(), "--endpoint-url", s3_endpoint)
    assert again.returncode == 0 and "already in the store" in again.stdout
    assert _snapshot_uri(again.stdout) == uri  # named by content

    listed = _tvision("repo", "list", root.uri(), "--endpoint-url", s3_endpoint)
    assert listed.returncode == 0, listed.stderr
    assert uri.rsplit("/", 1)[1] in listed.stdout and "efficientnet_lite0 (1)" in listed.stdout

    verified = _tvision("repo", "verify", uri, "--endpoint-url", s3_endpoint)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK:" in verified.stdout

    location = snapshots.StoreLocation.parse(uri, s3_endpoint)
    with temporary_server(location.triton_uri()) as server:
        with Client(server.grpc_url, timeout_s=60) as client:
            top = client.classify(sample_photo("coffee").path).top
        assert top.label == "espresso"
        validated = run_tvision(
            "validate", "--repository", uri, "--endpoint-url", s3_endpoint,
            "--url", server.grpc_url, timeout_s=300, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "PASS" in validated.stdout and "decode strategy of the repository: draft-3x" in (
        validated.stdout
    )


def test_an_interrupted_push_is_never_complete_and_a_rerun_completes_it(
    s3_endpoint, cpu_repository
) -> None:
    root = _store(s3_endpoint, "interrupted")
    fs = snapshots.filesystem(root)
    push = subprocess.Popen(
        [sys.executable, "-m", "tvision.cli", "repo", "push", str(cpu_repository), root.uri(),
         "--endpoint-url", s3_endpoint],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and push.poll() is None:
            fs.invalidate_cache()
            if fs.exists(root.key("snapshots")) and fs.find(root.key("snapshots")):
                break
            time.sleep(0.01)
        assert push.poll() is None, "the push finished before it could be interrupted"
        os.killpg(push.pid, signal.SIGKILL)  # no chance to clean up, as a crash would leave it
    finally:
        push.wait(timeout=30)
    fs.invalidate_cache()
    (snapshot_id,) = [entry.rsplit("/", 1)[1] for entry in fs.ls(root.key("snapshots"))]
    uri = root.snapshot(snapshot_id).uri()
    assert not fs.exists(root.snapshot(snapshot_id).key(snapshots.SNAPSHOT_MANIFEST))

    verified = _tvision("repo", "verify", uri, "--endpoint-url", s3_endpoint)
    assert verified.returncode == 2 and "is incomplete" in verified.stderr
    listed = _tvision("repo", "list", root.uri(), "--endpoint-url", s3_endpoint)
    assert "INCOMPLETE" in listed.stdout

    rerun = _tvision("repo", "push", str(cpu_repository), root.uri(), "--endpoint-url", s3_endpoint)
    assert rerun.returncode == 0, rerun.stderr
    assert _snapshot_uri(rerun.stdout) == uri
    skipped = int(rerun.stdout.split("skipped ", 1)[1].split(" ", 1)[0])
    assert skipped >= 1  # what the interrupted push uploaded intact is not sent again
    assert _tvision("repo", "verify", uri, "--endpoint-url", s3_endpoint).returncode == 0


def test_a_tampered_object_fails_verify(s3_endpoint, cpu_repository) -> None:
    root = _store(s3_endpoint, "tampered")
    result = snapshots.push(cpu_repository, root)
    fs = snapshots.filesystem(root)
    labels = result.location.key(f"{DEFAULT_SPEC.name}/labels.txt")
    fs.pipe_file(labels, fs.cat_file(labels).replace(b"espresso", b"decaf"))
    verified = _tvision("repo", "verify", result.location.uri(), "--endpoint-url", s3_endpoint)
    assert verified.returncode == 1
    assert "[checksums]" in verified.stdout and "labels.txt" in verified.stdout


def test_gc_keeps_the_newest_and_every_protected_snapshot(
    s3_endpoint, default_source, tmp_path
) -> None:
    root = _store(s3_endpoint, "collect")
    uris = []
    for queue_size in (11, 12, 13):  # three different repositories, pushed oldest first
        local = tmp_path / f"repo{queue_size}"
        write_version(
            local, DEFAULT_SPEC.name, default_source, ServingOptions(max_queue_size=queue_size)
        )
        uris.append(snapshots.push(local, root).location.uri())
        time.sleep(1.1)  # manifests record creation to the second
    # The prod overlay as shipped, pointed at the oldest snapshot as the README says to
    # (TVISION_MODEL_REPOSITORY set to the snapshot's Triton URI).
    overlay = (ROOT / "k8s/overlays/prod/kustomization.yaml").read_text()
    oldest = snapshots.StoreLocation.parse(uris[0], s3_endpoint)
    kustomization = tmp_path / "kustomization.yaml"
    kustomization.write_text(
        re.sub(r"TVISION_MODEL_REPOSITORY=\S+", f"TVISION_MODEL_REPOSITORY={oldest.triton_uri()}",
               overlay, count=1)
    )  # fmt: skip
    gc = ("repo", "gc", root.uri(), "--keep", "1", "--endpoint-url", s3_endpoint)
    # The control: without the overlay, the oldest would go too.
    unprotected = _tvision(*gc, "--dry-run")
    assert unprotected.returncode == 0, unprotected.stderr
    assert {f"would remove {uris[0]}", f"would remove {uris[1]}"} <= set(
        unprotected.stdout.splitlines()
    ), unprotected.stdout
    dry = _tvision(*gc, "--kustomization", str(kustomization), "--dry-run")
    assert dry.returncode == 0 and f"would remove {uris[1]}" in dry.stdout
    assert f"would remove {uris[0]}" not in dry.stdout
    assert {info.location.uri() for info in snapshots.list_snapshots(root)} == set(uris)
    collected = _tvision(*gc, "--kustomization", str(kustomization))
    assert collected.returncode == 0, collected.stderr
    assert f"removed {uris[1]}" in collected.stdout
    infos = snapshots.list_snapshots(root)
    assert {info.location.uri() for info in infos} == {uris[0], uris[2]}
    assert all(info.complete for info in infos)
    # What the overlay names is whole in the store, every object as pushed; the removed
    # snapshot left no object behind.
    assert snapshots.verify_snapshot(oldest) == []
    fs = snapshots.filesystem(root)
    fs.invalidate_cache()
    removed = snapshots.StoreLocation.parse(uris[1], s3_endpoint)
    assert not fs.exists(removed.key()) or fs.find(removed.key()) == []


def test_export_straight_into_the_store(s3_endpoint) -> None:
    root = _store(s3_endpoint, "export")
    exported = _tvision("export", "--repository", root.uri(), "--endpoint-url", s3_endpoint)
    assert exported.returncode == 0, exported.stderr[-3000:]
    # The preprocessing it derived is said, in the flags' names, on one line.
    said = [line for line in exported.stderr.splitlines() if "preprocessing:" in line]
    assert said == [f"  preprocessing: {DEFAULT_SPEC.preprocess.describe()}"], exported.stderr
    assert said[0].startswith("  preprocessing: resize_short_px 256, crop_px 224, scale 1, ")
    uri = _snapshot_uri(exported.stdout)
    (info,) = snapshots.list_snapshots(root)
    assert info.complete and info.location.uri() == uri
    assert sorted(info.manifest.models) == [
        DEFAULT_SPEC.name,
        f"{DEFAULT_SPEC.name}_classifier",
        f"{DEFAULT_SPEC.name}_intake",
        f"{DEFAULT_SPEC.name}_preprocess",
    ]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["repo", "list", "s3://no-such-bucket/models"], "bucket 'no-such-bucket' does not exist"),
        (["repo", "verify", "s3://serve/models/prod/snapshots/0000000000000000"], "does not exist"),
        (["serve", "--repository", "s3://serve/models/prod"], "names no snapshot"),
    ],
)
def test_store_errors_name_the_problem(s3_endpoint, command, message) -> None:
    _store(s3_endpoint, "serve")
    completed = _tvision(*command, "--endpoint-url", s3_endpoint, timeout_s=120)
    assert completed.returncode != 0
    assert message in completed.stderr, completed.stderr


def test_a_push_to_a_missing_bucket_is_one_line_under_no_progress_bar(
    s3_endpoint, cpu_repository
) -> None:
    completed = _tvision(
        "repo", "push", str(cpu_repository), "s3://no-such-bucket/models",
        "--endpoint-url", s3_endpoint, timeout_s=120,
    )  # fmt: skip
    assert completed.returncode == 2 and completed.stdout == ""  # no empty bar drawn
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith("error: ") and "bucket 'no-such-bucket' does not exist" in line


def test_an_unreachable_endpoint_is_named(tmp_path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    completed = _tvision(
        "repo", "list", "s3://models/prod", "--endpoint-url", closed, timeout_s=120
    )
    assert completed.returncode == 2  # could not run (tvision.exit_codes)
    assert "cannot reach the object store" in completed.stderr and closed in completed.stderr


def test_missing_credentials_are_named(s3_endpoint, tmp_path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment["HOME"] = str(tmp_path)  # no AWS shared files either
    completed = run_tvision(
        "repo", "list", "s3://serve/models/prod", "--endpoint-url", s3_endpoint,
        timeout_s=120, cwd=ROOT, env=environment,
    )  # fmt: skip
    assert completed.returncode == 2  # could not run (tvision.exit_codes)
    assert "found no credentials" in completed.stderr, completed.stderr


@contextlib.contextmanager
def _moto_server(environment: dict[str, str]) -> Iterator[str]:
    """Another moto server on loopback, with ``environment`` added to its own."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **environment},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "no moto_server"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_refused_credentials_are_named_without_the_secret(s3_endpoint) -> None:
    """A real refusal: a moto server that authenticates requests against its own IAM
    (INITIAL_NO_AUTH_ACTION_COUNT=0, moto's switch for it) knows no access key, so it
    refuses this session's key as S3 refuses an unknown one, while the secret sits in the
    command's environment (set by the s3_endpoint fixture)."""
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    with _moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as refusing:
        completed = run_tvision(
            "repo", "list", "s3://serve/models/prod", "--endpoint-url", refusing,
            timeout_s=120, cwd=ROOT,
        )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "access denied; check the credentials in AWS_ACCESS_KEY_ID" in completed.stderr, output
    assert "Access Key Id you provided does not exist" in completed.stderr  # the store's reason
    assert SECRET not in output
    assert "Traceback" not in output


def test_a_credentials_error_holding_the_secret_is_named_without_it() -> None:
    """A FAKE botocore error that carries the secret in its text: no real store sends the
    secret back (it never receives it), so this cannot be produced for real; it checks
    that the message for a credentials error never repeats the error's own text."""
    from botocore.exceptions import ClientError

    location = snapshots.StoreLocation("b", "p", "http://127.0.0.1:1")
    refused = ClientError(
        {"Error": {"Code": "SignatureDoesNotMatch", "Message": f"signed with {SECRET}"}},
        "ListObjectsV2",
    )
    assert SECRET in str(refused)
    with pytest.raises(snapshots.StoreError, match="refused or found no credentials") as raised:
        with snapshots.store_errors(location, "list"):
            raise refused
    assert SECRET not in str(raised.value)


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_a_local_copy_of_a_snapshot_serves_like_the_original(
    s3_endpoint, cpu_repository, triton_server, tmp_path
):
    root = _store(s3_endpoint, "serve")
    result = snapshots.push(cpu_repository, root)
    local = tmp_path / "fetched"
    manifest = snapshots.fetch(result.location, local)
    original = _files(cpu_repository)
    assert {file.path for file in manifest.files} == set(original)
    assert _files(local) == original  # every file, byte for byte, and no other
    assert verify_repository(local) == []
    photos = [sample_photo(name).path.read_bytes() for name in ("coffee", "chelsea", "rocket")]
    with (
        temporary_server(local) as copy,
        Client(copy.grpc_url, timeout_s=60) as from_copy,
        Client(triton_server.grpc_url, timeout_s=60) as from_original,
    ):
        for photo in photos:
            served, expected = (
                from_copy.classify(photo, top_k=5),
                from_original.classify(photo, top_k=5),
            )
            assert [p.index for p in served.predictions] == [p.index for p in expected.predictions]
            assert [p.score for p in served.predictions] == pytest.approx(
                [p.score for p in expected.predictions], abs=1e-6
            )
    shutil.rmtree(local)
