"""Writes one model into a Triton model repository, as a new numbered version.

Layout for a spec named ``NAME`` (version ``V``)::

    model_repository/
      NAME/                     ensemble: image bytes in, probabilities out
        config.pbtxt  labels.txt  V/manifest.json
      NAME_intake/              python backend, one request at a time (isolates bad tensors)
        config.pbtxt  V/model.py  V/contract.py
      NAME_preprocess/          python backend: decode, resize, crop, normalise
        config.pbtxt  warmup/sample_image  V/model.py  V/contract.py
      NAME_classifier/          cpu: python backend + ONNX Runtime; gpu: onnxruntime_onnx
        config.pbtxt  labels.txt  V/model.onnx
                                [V/model.py  V/contract.py  V/prediction_metrics.py]

With ``--preprocess dali`` (gpu target) the intake also checks every image and computes
its geometry (``V/model.py`` is ``dali_intake.py``, with ``V/preprocess.py`` beside it),
and ``NAME_preprocess`` is a DALI-backend model: ``config.pbtxt  V/dali.py``.

Every file name here is defined once, in ``contract``; ``ModelNames`` and
``WrittenVersion`` answer "where is X" for the benchmark, ``verify`` and the tests.

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

from tvision_export import configs, contract, dali_model
from tvision_export.options import ServingOptions
from tvision_export.spec import write_labels


@dataclass(frozen=True)
class ModelNames:
    ensemble: str
    intake: str
    preprocess: str
    classifier: str

    @classmethod
    def for_model(cls, name: str) -> ModelNames:
        return cls(
            ensemble=name,
            intake=name + contract.INTAKE_SUFFIX,
            preprocess=name + contract.PREPROCESS_SUFFIX,
            classifier=name + contract.CLASSIFIER_SUFFIX,
        )

    def all(self) -> tuple[str, str, str, str]:
        return (self.ensemble, self.intake, self.preprocess, self.classifier)


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
    # One encoded photo the preprocessing model decodes at load, so the first request is warm.
    warmup_image: bytes


@dataclass(frozen=True)
class WrittenVersion:
    names: ModelNames
    version: int
    repository: Path
    files: dict[str, str]  # path relative to the repository -> sha256

    def version_dir(self, model: str) -> Path:
        return self.repository / model / str(self.version)

    @property
    def classifier_onnx(self) -> Path:
        return self.version_dir(self.names.classifier) / contract.MODEL_ONNX_FILE


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


def _serialized_bytes_element(data: bytes) -> bytes:
    """One BYTES tensor element as Triton reads ``input_data_file``: length, then bytes."""
    import struct

    return struct.pack("<I", len(data)) + data


def _triton_model_source(file_name: str) -> str:
    return (resources.files("tvision_export") / "triton_models" / file_name).read_text("utf-8")


def _contract_source() -> Path:
    return Path(contract.__file__)


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
    rendered = _rendered_configs(names, source, options)
    if not source.warmup_image:
        raise ValueError("the model source needs a warmup image (an encoded photo)")

    with _staging_dir(repository) as staging:
        _stage_configs_and_labels(staging, version, rendered, names, source.labels)
        if options.preprocess == "dali":
            _stage_dali_models(staging, version, names, source, options)
        else:
            _stage_warmup(staging / names.preprocess, source.warmup_image)
            _stage_python_models(staging, version, names, options)
        classifier_version = staging / names.classifier / str(version)
        shutil.copyfile(source.onnx_path, classifier_version / contract.MODEL_ONNX_FILE)
        files = _stage_manifest(staging, name, version, names, options)
        _move_into_place(staging, repository, names, version)
    return WrittenVersion(names=names, version=version, repository=repository, files=files)


def _rendered_configs(
    names: ModelNames, source: ClassifierSource, options: ServingOptions
) -> dict[str, str]:
    """Each model's ``config.pbtxt`` text, by model name."""
    num_classes = len(source.labels)
    ensemble = configs.ensemble_config(
        names.ensemble,
        names.intake,
        names.preprocess,
        names.classifier,
        source.onnx_input,
        source.onnx_output,
        num_classes,
        options,
    )
    preprocess = configs.preprocess_config(
        names.preprocess, source.preprocess_spec_json, source.input_dims, options
    )
    classifier = configs.classifier_config(
        names.classifier,
        source.onnx_input,
        source.onnx_output,
        source.input_dims,
        source.labels,
        options,
    )
    intake = configs.intake_config(names.intake, options)
    if options.preprocess == "dali":
        intake = dali_model.intake_config(names.intake, options, source.preprocess_spec_json)
        preprocess = dali_model.preprocess_config(
            names.preprocess, source.preprocess_spec_json, source.input_dims, options
        )
    return {
        names.ensemble: configs.render(ensemble),
        names.intake: configs.render(intake),
        names.preprocess: configs.render(preprocess),
        names.classifier: configs.render(classifier),
    }


def _stage_configs_and_labels(
    staging: Path, version: int, rendered: dict[str, str], names: ModelNames, labels: list[str]
) -> None:
    """Every model's (empty) version directory and config; labels beside the ensemble's
    and the classifier's."""
    for model_name, config_text in rendered.items():
        (staging / model_name / str(version)).mkdir(parents=True)
        (staging / model_name / contract.CONFIG_FILE).write_text(config_text, encoding="utf-8")
    for model_name in (names.ensemble, names.classifier):
        write_labels(labels, staging / model_name / contract.LABELS_FILE)


def _stage_warmup(preprocess_dir: Path, warmup_image: bytes) -> None:
    """The photo the preprocessing model decodes at load, as Triton reads warmup data."""
    warmup_dir = preprocess_dir / contract.WARMUP_DIR
    warmup_dir.mkdir()
    (warmup_dir / contract.WARMUP_IMAGE_FILE).write_bytes(_serialized_bytes_element(warmup_image))


def _stage_python_models(
    staging: Path, version: int, names: ModelNames, options: ServingOptions
) -> None:
    """Each python-backend model's ``model.py``, with ``contract.py`` beside it (the models
    import it as ``from . import contract``), and the cpu classifier's prediction metrics."""
    python_models = {names.intake: "intake.py", names.preprocess: "preprocess.py"}
    if options.target == "cpu":
        python_models[names.classifier] = "classifier_onnxruntime.py"
    for model_name, source_file in python_models.items():
        version_dir = staging / model_name / str(version)
        (version_dir / contract.MODEL_PY_FILE).write_text(
            _triton_model_source(source_file), encoding="utf-8"
        )
        shutil.copyfile(_contract_source(), version_dir / contract.CONTRACT_FILE)
        if model_name == names.classifier:
            (version_dir / contract.PREDICTION_METRICS_FILE).write_text(
                _triton_model_source(contract.PREDICTION_METRICS_FILE), encoding="utf-8"
            )


def _stage_dali_models(
    staging: Path, version: int, names: ModelNames, source: ClassifierSource,
    options: ServingOptions,
) -> None:  # fmt: skip
    """The DALI path: the intake's ``model.py`` with the python preprocessing (whose checks
    it uses) and ``contract.py`` beside it; the DALI model's rendered ``dali.py``."""
    intake_dir = staging / names.intake / str(version)
    (intake_dir / contract.MODEL_PY_FILE).write_text(
        _triton_model_source("dali_intake.py"), encoding="utf-8"
    )
    (intake_dir / contract.PREPROCESS_PY_FILE).write_text(
        _triton_model_source("preprocess.py"), encoding="utf-8"
    )
    shutil.copyfile(_contract_source(), intake_dir / contract.CONTRACT_FILE)
    spec = json.loads(source.preprocess_spec_json)
    (staging / names.preprocess / str(version) / contract.DALI_PY_FILE).write_text(
        dali_model.render_dali_py(spec, options.max_batch_size), encoding="utf-8"
    )


def _stage_manifest(
    staging: Path, name: str, version: int, names: ModelNames, options: ServingOptions
) -> dict[str, str]:
    """Hash every staged file into the ensemble's manifest; return the hashes."""
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
    manifest_path = staging / names.ensemble / str(version) / contract.MANIFEST_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


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


_MODEL_LEVEL_FILES = (
    contract.CONFIG_FILE,
    contract.LABELS_FILE,
    f"{contract.WARMUP_DIR}/{contract.WARMUP_IMAGE_FILE}",
)
