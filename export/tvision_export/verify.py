"""``tvision repo verify``: check a model repository before a server loads it.

Checks every config against Triton's ``ModelConfig`` schema, the files each model needs,
the manifests' sha256 checksums, each ensemble's wiring (models, tensor names, dtypes,
shapes and batch sizes agree between steps), and that label files match output sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from tvision_export import configs, contract
from tvision_export.repository import sha256_of

KINDS = ("config", "files", "checksums", "wiring", "labels")


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.where}: {self.message}"


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(child.name) for child in model_dir.iterdir() if child.name.isdigit())


def _tensor_type(
    tensor: configs.model_config_pb2.ModelInput | configs.model_config_pb2.ModelOutput,
) -> tuple[str, tuple[int, ...]]:
    data_type = configs.model_config_pb2.DataType.Name(tensor.data_type)
    return data_type, tuple(tensor.dims)


def verify_repository(repository: Path) -> list[Problem]:
    """Every problem found, in a stable order. An empty list means the repository is sound."""
    problems: list[Problem] = []
    if not repository.is_dir():
        return [Problem("files", str(repository), "repository directory does not exist")]
    parsed: dict[str, configs.model_config_pb2.ModelConfig] = {}
    model_dirs = sorted(
        path for path in repository.iterdir() if path.is_dir() and not path.name.startswith(".")
    )
    if not model_dirs:
        problems.append(Problem("files", str(repository), "no models in the repository"))
    for model_dir in model_dirs:
        config_path = model_dir / contract.CONFIG_FILE
        if not config_path.is_file():
            problems.append(Problem("files", model_dir.name, f"{contract.CONFIG_FILE} is missing"))
            continue
        try:
            config = configs.parse(config_path.read_text(encoding="utf-8"))
        except text_format.ParseError as exc:
            problems.append(Problem("config", str(config_path), f"not a valid ModelConfig: {exc}"))
            continue
        if config.name and config.name != model_dir.name:
            problems.append(
                Problem("config", str(config_path), f"name {config.name!r} != directory name")
            )
        parsed[model_dir.name] = config
        problems.extend(_check_files(model_dir, config))
        problems.extend(_check_labels(model_dir, config))
    for name, config in parsed.items():
        if config.platform == "ensemble":
            problems.extend(_check_wiring(name, config, parsed))
            problems.extend(_check_manifests(repository, repository / name))
    return problems


def _check_files(model_dir: Path, config: configs.model_config_pb2.ModelConfig) -> list[Problem]:
    versions = _versions(model_dir)
    if not versions:
        return [Problem("files", model_dir.name, "no numbered version directory")]
    problems = []
    for version in versions:
        version_dir = model_dir / str(version)
        needed = []
        if config.backend == "python":
            needed.append(contract.MODEL_PY_FILE)
        onnx_file = contract.MODEL_ONNX_FILE
        if config.platform == "onnxruntime_onnx" or (version_dir / onnx_file).exists():
            needed.append(onnx_file)
        for file_name in needed:
            if not (version_dir / file_name).is_file():
                problems.append(
                    Problem("files", f"{model_dir.name}/{version}", f"{file_name} is missing")
                )
    return problems


def _check_labels(model_dir: Path, config: configs.model_config_pb2.ModelConfig) -> list[Problem]:
    problems = []
    for output in config.output:
        if not output.label_filename:
            continue
        path = model_dir / output.label_filename
        if not path.is_file():
            problems.append(Problem("labels", str(path), "label file named in config is missing"))
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        classes = output.dims[-1] if output.dims else 0
        if len(lines) != classes:
            problems.append(
                Problem(
                    "labels",
                    str(path),
                    f"{len(lines)} labels for output {output.name!r} of {classes} classes",
                )
            )
    return problems


def _check_wiring(
    name: str,
    ensemble: configs.model_config_pb2.ModelConfig,
    parsed: dict[str, configs.model_config_pb2.ModelConfig],
) -> list[Problem]:
    problems = []
    tensors = {tensor.name: _tensor_type(tensor) for tensor in ensemble.input}
    for index, step in enumerate(ensemble.ensemble_scheduling.step):
        where = f"{name} step {index} ({step.model_name})"
        model = parsed.get(step.model_name)
        if model is None:
            problems.append(Problem("wiring", where, "model is not in the repository"))
            continue
        if ensemble.max_batch_size > model.max_batch_size:
            problems.append(
                Problem(
                    "wiring",
                    where,
                    f"ensemble max_batch_size {ensemble.max_batch_size} exceeds the model's "
                    f"{model.max_batch_size}",
                )
            )
        model_inputs = {tensor.name: _tensor_type(tensor) for tensor in model.input}
        for model_input, ensemble_tensor in step.input_map.items():
            if model_input not in model_inputs:
                problems.append(Problem("wiring", where, f"model has no input {model_input!r}"))
            elif ensemble_tensor not in tensors:
                problems.append(
                    Problem("wiring", where, f"tensor {ensemble_tensor!r} is produced by no step")
                )
            elif tensors[ensemble_tensor] != model_inputs[model_input]:
                problems.append(
                    Problem(
                        "wiring",
                        where,
                        f"input {model_input!r} is {model_inputs[model_input]} but "
                        f"{ensemble_tensor!r} is {tensors[ensemble_tensor]}",
                    )
                )
        model_outputs = {tensor.name: _tensor_type(tensor) for tensor in model.output}
        for model_output, ensemble_tensor in step.output_map.items():
            if model_output not in model_outputs:
                problems.append(Problem("wiring", where, f"model has no output {model_output!r}"))
            else:
                tensors[ensemble_tensor] = model_outputs[model_output]
    for output in ensemble.output:
        produced = tensors.get(output.name)
        if produced is None:
            problems.append(Problem("wiring", name, f"output {output.name!r} is never produced"))
        elif produced != _tensor_type(output):
            problems.append(
                Problem(
                    "wiring",
                    name,
                    f"output {output.name!r} is declared {_tensor_type(output)} "
                    f"but produced as {produced}",
                )
            )
    return problems


def _check_manifests(repository: Path, ensemble_dir: Path) -> list[Problem]:
    problems = []
    versions = _versions(ensemble_dir)
    for version in versions:
        manifest_path = ensemble_dir / str(version) / contract.MANIFEST_FILE
        if not manifest_path.is_file():
            problems.append(Problem("checksums", str(manifest_path), "manifest is missing"))
            continue
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        latest = version == versions[-1]
        for relative, expected in manifest["files"].items():
            in_version_dir = relative.split("/")[1:2] == [str(version)]
            # Model-level files (configs, labels) belong to the latest export only.
            if not in_version_dir and not latest:
                continue
            path = repository / relative
            if not path.is_file():
                problems.append(Problem("checksums", relative, "listed in manifest but missing"))
            elif sha256_of(path) != expected:
                problems.append(
                    Problem("checksums", relative, f"sha256 differs from manifest v{version}")
                )
    return problems


def first_of_each_kind(problems: list[Problem]) -> list[tuple[Problem, int]]:
    """The first problem of each kind, with how many of that kind there are."""
    summary = []
    for kind in KINDS:
        of_kind = [problem for problem in problems if problem.kind == kind]
        if of_kind:
            summary.append((of_kind[0], len(of_kind)))
    return summary
