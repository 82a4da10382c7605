"""What the commands decide, reached without a subprocess: the functions the command
modules call (``tvision.cli._policy``, ``tvision.server``, ``tvision.plan``,
``tvision.fidelity``). All real objects; no server is started."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tvision.cli._policy import (
    classification_records,
    export_destination,
    import_preprocess,
    render_classifications,
    render_snapshots,
    require_directory,
)
from tvision.edge import EdgeTLS
from tvision.server import (
    MIN_ADMIN_KEY_CHARS,
    Heal,
    StubWatchdog,
    TritonServer,
    lockdown_settings,
    triton_tls_args,
)
from tvision.server.repository import served_repository
from tvision_client import Classification, InvalidImageError, Prediction
from tvision_export import snapshots
from tvision_export.onnx_import import OnnxClassifierInfo, OnnxImportError
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC

KEY = "k" * MIN_ADMIN_KEY_CHARS


# -- serve: admin key and TLS ------------------------------------------------------------


def test_lockdown_reads_the_key_from_the_named_variable_only() -> None:
    assert lockdown_settings(None, None, None, environ={"KEY": KEY}) == (None, None)
    assert lockdown_settings("KEY", None, None, environ={"KEY": KEY}) == (KEY, None)
    for environ in ({}, {"KEY": KEY[:-1]}):
        with pytest.raises(ValueError, match=f"at least {MIN_ADMIN_KEY_CHARS} characters"):
            lockdown_settings("KEY", None, None, environ=environ)


def test_lockdown_gives_the_server_tls_from_existing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key, ca = (tmp_path / name for name in ("cert.pem", "key.pem", "ca.pem"))
    for path in (cert, key, ca):
        path.write_text("PEM")
    monkeypatch.chdir(tmp_path)  # relative paths are resolved: nginx reads them elsewhere
    _, tls = lockdown_settings(None, Path("cert.pem"), Path("key.pem"))
    assert tls == EdgeTLS(cert.resolve(), key.resolve(), None)
    _, mutual = lockdown_settings(None, cert, key, ca)
    assert mutual == EdgeTLS(cert.resolve(), key.resolve(), ca.resolve())
    # Without the edge, Triton terminates it itself, with these flags.
    assert triton_tls_args(mutual)[-2:] == [
        "--grpc-use-ssl-mutual=true", f"--grpc-root-cert={ca.resolve()}",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tls_cert": "cert.pem"}, "go together"),
        ({"tls_key": "key.pem"}, "go together"),
        ({"tls_client_ca": "ca.pem"}, "needs --grpc-tls-cert"),
        ({"tls_cert": "cert.pem", "tls_key": "absent.pem"}, "absent.pem: no such file"),
    ],
)
def test_lockdown_refuses_half_a_pair_or_a_missing_file(
    tmp_path: Path, given: dict[str, str], message: str
) -> None:
    (tmp_path / "cert.pem").write_text("PEM")
    (tmp_path / "key.pem").write_text("PEM")
    (tmp_path / "ca.pem").write_text("PEM")
    paths: dict[str, Path | None] = {"tls_cert": None, "tls_key": None, "tls_client_ca": None}
    paths.update({name: tmp_path / file for name, file in given.items()})
    with pytest.raises(ValueError, match=message):
        lockdown_settings(None, paths["tls_cert"], paths["tls_key"], paths["tls_client_ca"])


# -- serve: heal reporting -----------------------------------------------------------------


def test_each_finished_heal_is_reported_once_and_a_running_one_waits(tmp_path: Path) -> None:
    """A watchdog of a server that was never started: its heals list is filled by hand,
    as its thread fills it (a heal is appended when noticed, finished when reloaded)."""
    watchdog = StubWatchdog(TritonServer(tmp_path))
    reloaded = Heal("a", noticed_at=0.0, recovered_s=1.5)
    failed = Heal("b", noticed_at=0.0, error="connection refused")
    reloading = Heal("c", noticed_at=0.0)
    watchdog.heals += [reloaded, failed, reloading]
    assert watchdog.take_unreported_heals() == [reloaded, failed]
    assert watchdog.take_unreported_heals() == []
    reloading.recovered_s = 2.0
    assert watchdog.take_unreported_heals() == [reloading]
    assert watchdog.take_unreported_heals() == []


# -- where repositories live -----------------------------------------------------------------


def test_a_remote_export_goes_to_a_temporary_directory_then_to_the_store() -> None:
    with export_destination("model_repository") as (local, remote):
        assert (local, remote) == (Path("model_repository"), None)
    with export_destination("s3://models/prod") as (local, remote):
        assert remote == "s3://models/prod" and local.parent.is_dir()
        work_dir = local.parent
    assert not work_dir.exists()


def test_a_served_repository_is_a_path_or_a_complete_snapshot(tmp_path: Path) -> None:
    assert served_repository(str(tmp_path), None) == tmp_path
    with pytest.raises(snapshots.StoreError, match="names no snapshot"):
        served_repository("s3://models/prod", "http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("location", "remote"),
    [("s3://models/prod", True), ("gs://models/prod", True), ("as://acct/models", True),
     ("model_repository", False), ("/srv/s3://odd", False), ("S3://models", False)],
)  # fmt: skip
def test_one_definition_of_a_remote_repository(tmp_path: Path, location, remote) -> None:
    """Triton's object-store prefixes are remote, for the commands and the server alike;
    the snapshot store itself is S3 only, and says so."""
    assert snapshots.is_remote(location) is remote
    server = TritonServer(location)
    assert server.remote is remote
    assert isinstance(server.repository, str if remote else Path)
    if remote and not location.startswith("s3://"):
        with pytest.raises(snapshots.StoreError, match="is not an s3:// URI"):
            served_repository(location, None)


def test_verify_needs_a_directory_that_exists(tmp_path: Path) -> None:
    assert require_directory(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match="no such repository directory"):
        require_directory(str(tmp_path / "missing"))


# -- a brought ONNX file ---------------------------------------------------------------------


def _info(height: int | None) -> OnnxClassifierInfo:
    return OnnxClassifierInfo("input", "output", "NHWC", height, height, False, 10)


def test_an_import_crops_to_the_files_size_unless_told(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    norm = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    fixed = import_preprocess(_info(192), labels, "m", None, **norm)
    assert (fixed.crop_px, fixed.layout, fixed.mean) == (192, "NHWC", (0.5, 0.5, 0.5))
    assert import_preprocess(_info(192), labels, "m", 160, **norm).crop_px == 160
    assert import_preprocess(_info(None), labels, "m", 160, **norm).crop_px == 160
    with pytest.raises(OnnxImportError, match="dynamic; pass --crop-px"):
        import_preprocess(_info(None), labels, "m", None, **norm)
    for missing_labels, missing_name in ((None, "m"), (labels, None)):
        with pytest.raises(OnnxImportError, match="needs --labels and --name"):
            import_preprocess(_info(192), missing_labels, missing_name, None, **norm)


# -- what classify and repo list print -------------------------------------------------------


def test_classify_records_hold_predictions_or_the_error() -> None:
    image = sample_photo("coffee").path
    result = Classification([Prediction("espresso", 967, 0.9)], DEFAULT_SPEC.name)
    records = classification_records(
        [image, Path("bad.jpg")], [result, InvalidImageError("not an image")]
    )
    assert records == [
        {"image": str(image), "predictions": [{"label": "espresso", "index": 967, "score": 0.9}]},
        {"image": "bad.jpg", "error": "not an image"},
    ]
    assert render_classifications(records).splitlines() == [
        str(image), "   90.00%  espresso (967)", "bad.jpg", "  error: not an image",
    ]  # fmt: skip


def test_the_snapshot_table_marks_an_interrupted_push() -> None:
    root = snapshots.StoreLocation("models", "prod")
    manifest = snapshots.SnapshotManifest(
        "abc", "2025-01-01T00:00:00Z", {"m": [1, 2]},
        [snapshots.SnapshotFile("m/1/model.onnx", "", "", 2_500_000)],
    )  # fmt: skip
    infos = [
        snapshots.SnapshotInfo(root.snapshot("abc"), manifest),
        snapshots.SnapshotInfo(root.snapshot("def"), None),
    ]
    header, complete, incomplete = render_snapshots(root.uri(), infos).splitlines()
    assert header.startswith("snapshot") and complete.startswith("abc")
    assert "2.5" in complete and "m (1,2)" in complete
    assert incomplete.startswith("def") and "INCOMPLETE" in incomplete
    assert render_snapshots(root.uri(), []) == "no snapshots under s3://models/prod"


# -- plan and fidelity refuse what they cannot do -----------------------------------------------


@pytest.mark.parametrize(
    ("rates", "gpu_img_s", "max_cores", "message"),
    [
        ([0.0], None, 16, "--rate must be positive"),
        ([100.0, -1.0], 1000.0, 16, "--rate must be positive"),
        ([100.0], 0.0, 16, "--gpu-img-s must be positive"),
        ([100.0], None, 1, "--max-cores-per-pod must be at least 2"),
    ],
)
def test_a_plan_that_cannot_be_made_is_refused_before_measuring(
    rates: list[float], gpu_img_s: float | None, max_cores: int, message: str
) -> None:
    from tvision.plan import check_request, make_plan

    check_request([100.0], None, 16)
    check_request([100.0], 500.0, 2)
    with pytest.raises(ValueError, match=message):
        make_plan(rates, gpu_img_s=gpu_img_s, max_cores_per_pod=max_cores)


def test_fidelity_names_an_onnx_file_runtime_cannot_load(tmp_path: Path) -> None:
    from tvision.fidelity import FidelityError, measure

    photo = tmp_path / "coffee.png"
    shutil.copy(sample_photo("coffee").path, photo)
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx model")
    for onnx_path in (corrupt, tmp_path / "absent.onnx"):
        with pytest.raises(FidelityError, match="ONNX Runtime cannot load it"):
            measure(DEFAULT_SPEC, onnx_path, [photo], ["exact"], "exact")
