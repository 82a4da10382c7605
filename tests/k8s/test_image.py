"""The serving image installs exactly what the exported models import, at the versions the
embedded server runs them with; the configs parse with the newer release's schema."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from tests.k8s.rendering import K8S_DIR
from tvision_export import configs
from tvision_export.options import ServingOptions
from tvision_export.repository import write_version
from tvision_export.spec import DEFAULT_SPEC

IMAGE_DIR = K8S_DIR / "image"
ROOT = K8S_DIR.parent
# Imports that the image need not install, and why.
PROVIDED = {
    "triton_python_backend_utils": "Triton's python backend provides it",
}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules(source: str) -> set[str]:
    """Top-level modules a file imports: import statements, and import_module("...")."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def _third_party_imports(repository: Path) -> dict[str, set[str]]:
    """Third-party modules by model file, for every python model in ``repository``."""
    by_file = {}
    for model_file in sorted(repository.glob("*/*/*.py")):
        beside = {path.stem for path in model_file.parent.glob("*.py")}
        modules = _imported_modules(model_file.read_text())
        by_file[str(model_file.relative_to(repository))] = {
            module for module in modules
            if module not in sys.stdlib_module_names and module not in beside
            and module not in PROVIDED and module != "__future__"
        }  # fmt: skip
    return by_file


@pytest.fixture(scope="module")
def repositories(cpu_repository: Path, default_source, tmp_path_factory) -> dict[str, Path]:
    gpu = tmp_path_factory.mktemp("gpu") / "model_repository"
    write_version(gpu, DEFAULT_SPEC.name, default_source, ServingOptions(target="gpu"))
    return {"cpu": cpu_repository, "gpu": gpu}


def test_the_image_installs_every_package_the_models_import(repositories) -> None:
    pins = _pins(IMAGE_DIR / "requirements.txt")
    distributions = importlib.metadata.packages_distributions()
    needed: set[str] = set()
    for target, repository in repositories.items():
        imports = _third_party_imports(repository)
        assert imports, f"no python models in the {target} repository"
        for model_file, modules in imports.items():
            # Each model imports `from . import contract`: the copy beside it.
            assert (repository / model_file).with_name("contract.py").exists(), model_file
            for module in modules:
                (distribution, *_) = distributions.get(module, [module])
                name = _canonical(distribution)
                assert name in pins, (
                    f"{target}: {model_file} imports {module} ({distribution}), which "
                    f"k8s/image/requirements.txt does not install"
                )
                needed.add(name)
    # Nothing more than the models need, either.
    assert set(pins) == needed


def test_the_pins_are_the_versions_the_embedded_server_runs() -> None:
    for name, version in _pins(IMAGE_DIR / "requirements.txt").items():
        assert version, f"{name} is not pinned to one version"
        installed = importlib.metadata.version(name)
        assert installed == version, (
            f"{name} {installed} is installed here but the image pins {version}: "
            "run `make install`, which applies the image's pins as constraints"
        )


def test_the_dockerfile_installs_the_requirements_and_runs_unprivileged() -> None:
    dockerfile = (IMAGE_DIR / "Dockerfile").read_text()
    assert "COPY requirements.txt" in dockerfile
    assert re.search(r"pip install [^\n]*-r /opt/tvision/requirements\.txt", dockerfile)
    (user,) = re.findall(r"^USER (\d+)", dockerfile, flags=re.M)
    assert int(user) >= 10000


def test_both_targets_parse_with_the_production_release_schema(repositories) -> None:
    # configs.parse is strict text-format parsing into tritonclient's ModelConfig. The
    # pinned tritonclient is newer than the image's Triton release: an unknown or
    # misspelt field fails here.
    pinned = _pins(ROOT / "constraints.txt")["tritonclient"]
    assert importlib.metadata.version("tritonclient") == pinned
    assert tuple(int(part) for part in pinned.split(".")[:2]) >= (2, 59)
    for repository in repositories.values():
        for config in repository.glob("*/config.pbtxt"):
            configs.parse(config.read_text())
