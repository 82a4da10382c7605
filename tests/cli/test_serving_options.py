"""``ServingOptions`` on the command line (``tvision.cli._options``): one flag per field,
``KEY=VALUE`` text for ``tvision bench --set``, and no command-line code in the export
library."""

from __future__ import annotations

import argparse
import ast
from dataclasses import fields
from pathlib import Path

import pytest

import tvision_export
from tvision.cli._options import add_serving_arguments, parse_assignments, serving_options_from
from tvision_export.options import ServingOptions


def test_serving_option_assignments_are_typed_like_the_defaults() -> None:
    parsed = parse_assignments(
        ["classifier_instances=1", "allow_spinning=true", "preferred_batch_sizes=8,16"]
    )
    assert parsed == {
        "classifier_instances": 1,
        "allow_spinning": True,
        "preferred_batch_sizes": (8, 16),
    }
    assert parse_assignments(["target=gpu", "max_queue_size=7"]) == {
        "target": "gpu",
        "max_queue_size": 7,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignments(["no_such_option=1"])
    with pytest.raises(ValueError, match="true or false"):
        parse_assignments(["allow_spinning=maybe"])


def test_every_serving_option_is_a_cli_flag_with_help() -> None:
    parser = argparse.ArgumentParser()
    add_serving_arguments(parser)
    flags = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert set(flags) == {option.name for option in fields(ServingOptions)}
    assert all(action.help and "default:" in action.help for action in flags.values())
    assert "(default: 32; gpu target: 64)" in (flags["max_batch_size"].help or "")
    parsed = parser.parse_args(["--target", "gpu", "--fp16", "--preferred-batch-sizes", "8,16"])
    options = serving_options_from(parsed)
    assert (options.target, options.fp16, options.preferred_batch_sizes) == ("gpu", True, (8, 16))
    # Unset flags keep the target's defaults.
    assert options.max_batch_size == ServingOptions(target="gpu").max_batch_size == 64


def test_the_export_library_has_no_command_line_code() -> None:
    """argparse belongs to ``tvision.cli``: no module of ``tvision_export`` imports it."""
    package = Path(tvision_export.__file__).parent
    importing = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "argparse" for name in names):
                importing.append(source.relative_to(package).as_posix())
    assert len(list(package.rglob("*.py"))) > 10  # the walk found the package's sources
    assert importing == []
