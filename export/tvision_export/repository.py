"""Writes one model into a Triton model repository, as a new numbered version.

Layout for a spec named ``NAME`` (version ``V``)::

    model_repository/
      NAME/                     ensemble: image bytes in, probabilities out
        config.pbtxt  labels.txt  V/manifest.json
      NAME_preprocess/          python backend: decode, resize, crop, normalise
        config.pbtxt  V/model.py
      NAME_classifier/          cpu: python backend + ONNX Runtime; gpu: onnxruntime_onnx
        config.pbtxt  labels.txt  V/model.onnx  [V/model.py]

Everything is written into a staging directory beside the repository first, then renamed
into place, so a failure midway leaves the versions already there untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tvision_export import configs
from tvision_export.configs import ServingOptions

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class ModelNames:
    ensemble: str
    preprocess: str
    classifier: str

    @classmethod
    def for_model(cls, name: str) -> ModelNames:
        return cls(ensemble=name, preprocess=f"{name}_preprocess", classifier=f"{name}_classifier")

    def all(self) -> tuple[str, str, str]:
        return (self.ensemble, self.preprocess, self.classifier)


@dataclass(frozen=True)
class ClassifierSource:
    """What the repository writer needs from an exported or brought ONNX classifier."""

    onnx_path: Path
    onnx_input: str
    onnx_output: str
    # One image's tensor dims as the classifier takes it: [3, H, W] or [H, W, 3].
    input_dims: list[int]
    labels: list[str]
    preprocess_spec_json: str


@dataclass(frozen=True)
class WrittenVersion:
    names: ModelNames
    version: int
    repository: Path
    files: dict[str, str]  # path relative to the repository -> sha256


def next_version(repository: Path, names: ModelNames) -> int:
    """One past the highest numbered version of any of the three models."""
    highest = 0
    for name in names.all():
        model_dir = repository / name
        if model_dir.is_dir():
            for child in model_dir.iterdir():
                if child.is_dir() and child.name.isdigit():
                    highest = max(highest, int(child.name))
    return highest + 1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _warmup_image() -> bytes:
    """A real photo as one serialized BYTES element: 4-byte little-endian length, then JPEG."""
    import io
    import struct

    from PIL import Image

    from tvision_export.samples import sample_photo

    buffer = io.BytesIO()
    Image.open(sample_photo("coffee").path).convert("RGB").resize((320, 240)).save(
        buffer, "JPEG", quality=85
    )
    return struct.pack("<I", buffer.tell()) + buffer.getvalue()


def _triton_model_source(file_name: str) -> str:
    return (resources.files("tvision_export") / "triton_models" / file_name).read_text("utf-8")


@contextmanager
def _staging_dir(repository: Path) -> Iterator[Path]:
    # Beside the repository (same filesystem, so renames are atomic), never inside it:
    # Triton would try to load a half-written directory as a model.
    repository.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{repository.name}.staging-", dir=repository.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_version(
    repository: Path,
    name: str,
    source: ClassifierSource,
    options: ServingOptions,
) -> WrittenVersion:
    """Write the ensemble, preprocessing model and classifier as a new version.

    Raises:
        google.protobuf.json_format.ParseError: a generated config is not valid ModelConfig.
        OSError: the repository cannot be written; existing versions are left as they were.
    """
    names = ModelNames.for_model(name)
    version = next_version(repository, names)
    num_classes = len(source.labels)
    rendered = {
        names.ensemble: configs.render(
            configs.ensemble_config(
                names.ensemble,
                names.preprocess,
                names.classifier,
                source.onnx_input,
                source.onnx_output,
                num_classes,
                options,
            )
        ),
        names.preprocess: configs.render(
            configs.preprocess_config(
                names.preprocess, source.preprocess_spec_json, source.input_dims, options
            )
        ),
        names.classifier: configs.render(
            configs.classifier_config(
                names.classifier,
                source.onnx_input,
                source.onnx_output,
                source.input_dims,
                num_classes,
                options,
            )
        ),
    }
    labels_text = "\n".join(source.labels) + "\n"

    with _staging_dir(repository) as staging:
        for model_name, config_text in rendered.items():
            (staging / model_name / str(version)).mkdir(parents=True)
            (staging / model_name / "config.pbtxt").write_text(config_text, encoding="utf-8")
        for model_name in (names.ensemble, names.classifier):
            (staging / model_name / configs.LABELS_FILE).write_text(labels_text, encoding="utf-8")
        warmup_dir = staging / names.preprocess / "warmup"
        warmup_dir.mkdir()
        (warmup_dir / configs.WARMUP_IMAGE_FILE).write_bytes(_warmup_image())
        preprocess_version = staging / names.preprocess / str(version)
        (preprocess_version / "model.py").write_text(
            _triton_model_source("preprocess.py"), encoding="utf-8"
        )
        classifier_version = staging / names.classifier / str(version)
        shutil.copyfile(source.onnx_path, classifier_version / "model.onnx")
        if options.target == "cpu":
            (classifier_version / "model.py").write_text(
                _triton_model_source("classifier_onnxruntime.py"), encoding="utf-8"
            )

        files = {
            path.relative_to(staging).as_posix(): sha256_of(path)
            for path in sorted(staging.rglob("*"))
            if path.is_file()
        }
        manifest = {
            "model": name,
            "version": version,
            "target": options.target,
            "files": files,
        }
        manifest_path = staging / names.ensemble / str(version) / MANIFEST_FILE
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _move_into_place(staging, repository, names, version)
    return WrittenVersion(names=names, version=version, repository=repository, files=files)


def _move_into_place(staging: Path, repository: Path, names: ModelNames, version: int) -> None:
    """Rename the staged version directories, then the model-level files, into place.

    Version directories go first, configs last. If any rename fails, everything already
    moved is put back, so the repository holds exactly the versions it held before.
    """
    repository.mkdir(parents=True, exist_ok=True)
    moved_versions: list[Path] = []
    replaced_files: list[tuple[Path, Path | None]] = []  # (live file, backup or None)
    backups = staging / ".previous"
    backups.mkdir()
    try:
        for model_name in names.all():
            live_model = repository / model_name
            live_model.mkdir(exist_ok=True)
            target = live_model / str(version)
            os.replace(staging / model_name / str(version), target)
            moved_versions.append(target)
        for model_name in names.all():
            for relative in _MODEL_LEVEL_FILES:
                staged = staging / model_name / relative
                if not staged.exists():
                    continue
                live = repository / model_name / relative
                live.parent.mkdir(parents=True, exist_ok=True)
                backup: Path | None = None
                if live.exists():
                    backup = backups / model_name / relative
                    backup.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(live, backup)
                os.replace(staged, live)
                replaced_files.append((live, backup))
    except BaseException:
        for live, backup in reversed(replaced_files):
            if backup is not None:
                os.replace(backup, live)
            else:
                live.unlink(missing_ok=True)
        for target in reversed(moved_versions):
            shutil.rmtree(target, ignore_errors=True)
        raise


_MODEL_LEVEL_FILES = ("config.pbtxt", configs.LABELS_FILE, f"warmup/{configs.WARMUP_IMAGE_FILE}")
