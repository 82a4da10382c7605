"""What the commands decide, kept apart from argparse and print so that a unit test reaches
it (``tests/cli/test_policy.py``): where an export lives, how a brought ONNX file is
sized, and the shapes of what classify and ``repo list`` print. Where a served repository
lives is the server's (``tvision.server.repository.served_repository``).

Each function takes plain values and returns or raises; heavy modules are imported inside.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tvision_client import Classification
    from tvision_export.onnx_import import OnnxClassifierInfo
    from tvision_export.snapshots import SnapshotInfo
    from tvision_export.spec import PreprocessSpec


@contextlib.contextmanager
def export_destination(repository: str) -> Iterator[tuple[Path, str | None]]:
    """Where to export, and the store URI to push the result to afterwards (None: local).

    An ``s3://`` repository is exported into a temporary directory, removed on exit, and
    pushed from there as a snapshot; a directory is exported into in place.
    """
    from tvision_export import snapshots

    if not snapshots.is_remote(repository):
        yield Path(repository), None
        return
    with tempfile.TemporaryDirectory(prefix="tvision-export-") as work_dir:
        yield Path(work_dir) / "model_repository", repository


@contextlib.contextmanager
def configs_of(repository: str, endpoint_url: str | None) -> Iterator[Path]:
    """A local directory holding ``repository``'s configs: itself, or those of a remote
    snapshot downloaded for the duration.

    Raises:
        tvision_export.snapshots.StoreError: the snapshot cannot be read.
    """
    from tvision_export import snapshots

    if not snapshots.is_remote(repository):
        yield Path(repository)
        return
    with snapshots.local_configs(repository, endpoint_url) as local:
        yield local


def require_directory(repository: str) -> Path:
    """A local repository to verify: a missing directory is a wrong argument, not a
    problem found in a repository (as a remote snapshot that does not exist is).

    Raises:
        FileNotFoundError: ``repository`` is not a directory.
    """
    path = Path(repository)
    if not path.is_dir():
        raise FileNotFoundError(f"{repository}: no such repository directory")
    return path


def import_preprocess(
    info: OnnxClassifierInfo,
    labels: Path | None,
    name: str | None,
    crop_px: int | None,
    **preprocess: Any,
) -> PreprocessSpec:
    """The preprocessing for a brought ONNX file: the crop is ``crop_px`` or, when not
    given, the file's own fixed input size; ``preprocess`` holds the other fields
    (``resize_short_px``, ``mean``, ``std``, ``scale``, ``channel_order``).

    Raises:
        OnnxImportError: no labels or name, or a dynamic input size and no ``crop_px``.
    """
    from tvision_export.onnx_import import OnnxImportError
    from tvision_export.spec import PreprocessSpec

    if labels is None or name is None:
        raise OnnxImportError("--onnx needs --labels and --name")
    crop = crop_px or info.height
    if crop is None:
        raise OnnxImportError(
            "the model's input size is dynamic; pass --crop-px (and --resize-short-px)"
        )
    return PreprocessSpec.for_crop(crop, layout=info.layout, **preprocess)


def classification_records(
    images: Sequence[Path], results: Sequence[Classification | BaseException]
) -> list[dict[str, Any]]:
    """One JSON-ready record per image: its predictions, or the error it got."""
    from tvision_client import Classification

    records: list[dict[str, Any]] = []
    for image, result in zip(images, results, strict=True):
        if isinstance(result, Classification):
            predictions = [
                {"label": p.label, "index": p.index, "score": p.score} for p in result.predictions
            ]
            records.append({"image": str(image), "predictions": predictions})
        else:
            records.append({"image": str(image), "error": str(result)})
    return records


def render_classifications(records: Sequence[dict[str, Any]]) -> str:
    """The records as text: each image, then its scores and labels, or its error."""
    lines = []
    for record in records:
        lines.append(record["image"])
        if "error" in record:
            lines.append(f"  error: {record['error']}")
            continue
        for prediction in record["predictions"]:
            lines.append(
                f"  {prediction['score']:7.2%}  {prediction['label']} ({prediction['index']})"
            )
    return "\n".join(lines)


def render_snapshots(root_uri: str, infos: Sequence[SnapshotInfo]) -> str:
    """``repo list``: a row per snapshot, oldest first; an interrupted push says so."""
    if not infos:
        return f"no snapshots under {root_uri}"
    lines = [f"{'snapshot':<18}{'created':<22}{'size MB':>9}  models (versions)"]
    for info in infos:
        snapshot_id = info.location.snapshot_id or "?"
        if info.manifest is None:
            lines.append(
                f"{snapshot_id:<18}{'INCOMPLETE':<22}{'':>9}  (no manifest: interrupted push)"
            )
            continue
        models = ", ".join(
            f"{name} ({','.join(map(str, versions))})"
            for name, versions in info.manifest.models.items()
        )
        size_mb = info.manifest.size_bytes / 1e6
        lines.append(f"{snapshot_id:<18}{info.manifest.created:<22}{size_mb:>9.1f}  {models}")
    return "\n".join(lines)
