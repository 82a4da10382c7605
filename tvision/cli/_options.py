"""``ServingOptions`` on the command line: one flag per field, and ``KEY=VALUE`` text.

The table itself (fields, help text, choices, each target's defaults) is
``tvision_export.options``; this module only turns it into argparse flags
(``tvision export``) and parses the ``KEY=VALUE`` pairs of ``tvision bench --set``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from tvision_export.options import ServingOptions, default_of
from tvision_export.quality import QualityReference


def add_serving_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add ``--max-batch-size`` and friends, one flag per field, defaulting to "not set"."""
    for option in fields(ServingOptions):
        flag = "--" + option.name.replace("_", "-")
        cpu_default, gpu_default = default_of(option.name, "cpu"), default_of(option.name, "gpu")
        default = _show(cpu_default)
        if gpu_default != cpu_default:
            default += f"; gpu target: {_show(gpu_default)}"
        help_text = f"{option.metadata['help']} (default: {default})"
        if isinstance(cpu_default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif option.metadata["choices"]:
            parser.add_argument(
                flag, choices=option.metadata["choices"], default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag, type=_argparse_type(_converter(cpu_default)), default=None,
                help=help_text, metavar=option.name.upper(),
            )  # fmt: skip


def serving_options_from(namespace: argparse.Namespace, **forced: Any) -> ServingOptions:
    """The options set on the command line, the target's defaults for the rest.

    Raises:
        ValueError: the combination is not valid, or the quality reference is unreadable
            (read here, before a long export, as well as when the repository is written).
    """
    given = {
        option.name: getattr(namespace, option.name)
        for option in fields(ServingOptions)
        if getattr(namespace, option.name, None) is not None
    }
    options = ServingOptions(**{**given, **forced})
    if options.quality_reference:
        QualityReference.read(Path(options.quality_reference))
    return options


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """``["classifier_instances=1", ...]`` -> typed overrides, as the flags parse them.

    Raises:
        ValueError: an unknown field or a value of the wrong form.
    """
    names = sorted(option.name for option in fields(ServingOptions))
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or key not in names:
            raise ValueError(f"expected KEY=VALUE with KEY one of {names}")
        overrides[key] = _converter(default_of(key))(text)
    return overrides


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _converter(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, tuple):
        return _parse_int_tuple
    return type(default)


def _argparse_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse
