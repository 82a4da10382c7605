"""Every command the README shows, checked against the real command lines, so that a
command that no longer exists or a flag that changed fails the suite: each ``tvision``
and ``tvision-loadtest`` command is parsed by the program's own parser, each ``make``
target must exist (and the gate flags ``make loadtest`` passes on must parse), each path
into the repository must exist, and the by-hand install must name files and extras that
exist. Programs that cannot run here (a cluster, a registry) may appear only in a section
that says so. Blocks that can run are run: tests/e2e/test_readme_*.py, the demo.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import re
import subprocess
import sys
from importlib.metadata import metadata
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests import readme
from tests.helpers import ROOT
from tvision.cli import build_parser

# Run by the commands around them or by tests/e2e/test_readme_http.py (the curl block).
SHELL = {"cd", "echo", "printf", "stat", "cat", "python3", "curl"}
# Nothing here can run these: no cluster and no registry on this machine. tests/k8s
# renders, validates and policy-checks the manifests they would apply.
NEEDS_A_CLUSTER = {"docker", "kubectl", "kustomize", "helm"}
SAYS_IT_IS_NOT_RUN = "Nothing here has been applied to a cluster (there is none on this machine)"


def _all_commands() -> list[tuple[str, list[str]]]:
    """(the section's heading, argv) for every command in every ``sh`` block."""
    found = []
    for heading in re.findall(r"^## (.+)$", readme.text(), re.MULTILINE):
        for block in readme.blocks(heading, "sh"):
            found += [(heading, argv) for argv in readme.commands(block)]
    return found


COMMANDS = _all_commands()


def _program(argv: list[str]) -> str:
    return Path(argv[0]).name


def _parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """argparse's complaint about ``argv`` (None if it parses). argparse exits on an
    error; its message is kept by replacing the parser's error method."""

    class Refused(Exception):
        pass

    def refuse(message: str) -> NoReturn:
        raise Refused(message)

    # Each subcommand's parser complains through its own error method.
    for each in [parser, *_subparsers(parser).values()]:
        each.error = refuse  # type: ignore[method-assign]
    try:
        parser.parse_args(argv)
    except Refused as exc:
        return str(exc)
    return None


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {inner}": p for inner, p in _subparsers(sub).items()})
    return found


# Run in a process of its own: importing Locust monkey-patches the standard library with
# gevent, which hangs a process that already runs gRPC threads (the session's server and
# clients, earlier in the suite).
LOADTEST_PARSE = """
import json, sys
from locust.argument_parser import get_parser
from tvision_loadtest import flags
from tvision_loadtest.cli import locust_argv

parser = get_parser()
flags.add_arguments(parser)
wanted = json.loads(sys.stdin.read())
if wanted == "flags":
    print(json.dumps(sorted(parser._option_string_actions) + ["--ramp"]))
    sys.exit(0)
errors = []
for argv in wanted:
    def refuse(message):
        raise ValueError(message)
    parser.error = refuse
    try:
        parser.parse_args(locust_argv(argv)[1:])  # without the program's name
        errors.append(None)
    except ValueError as exc:
        errors.append(str(exc))
print(json.dumps(errors))
"""


def _in_the_loadtest_parser(wanted: object) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", LOADTEST_PARSE], input=json.dumps(wanted), capture_output=True,
        text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


@functools.cache
def _loadtest_errors(commands: tuple[tuple[str, ...], ...]) -> dict[tuple[str, ...], str | None]:
    """Locust's parser (with the tvision options) on each argv: its complaint, or None."""
    errors = _in_the_loadtest_parser([list(argv) for argv in commands])
    return dict(zip(commands, errors, strict=True))


def _loadtest_commands() -> tuple[tuple[str, ...], ...]:
    """Every tvision-loadtest argv the README shows, with the gates make loadtest passes."""
    found = [tuple(argv[1:]) for _, argv in COMMANDS if _program(argv) == "tvision-loadtest"]
    for _, argv in COMMANDS:
        if _program(argv) == "make":
            found += [tuple(arg.removeprefix("LOADTEST_GATE=").split()) for arg in argv
                      if arg.startswith("LOADTEST_GATE=")]  # fmt: skip
    return tuple(found)


def test_the_readme_shows_commands_of_every_kind() -> None:
    """The collection works: the commands below are found (a README rewritten into
    another shape would otherwise check nothing)."""
    programs = {_program(argv) for _, argv in COMMANDS}
    assert {"tvision", "tvision-loadtest", "make", "pip", "kubectl"} <= programs, programs
    assert sum(_program(argv) == "tvision" for _, argv in COMMANDS) >= 15


@pytest.mark.parametrize(
    "argv", [argv for _, argv in COMMANDS if _program(argv) == "tvision"], ids=" ".join
)
def test_each_tvision_command_parses(argv: list[str]) -> None:
    assert _parse_error(build_parser(), argv[1:]) is None, argv


@pytest.mark.parametrize(
    "argv", [argv for _, argv in COMMANDS if _program(argv) == "tvision-loadtest"],
    ids=" ".join,
)  # fmt: skip
def test_each_loadtest_command_parses(argv: list[str]) -> None:
    assert _loadtest_errors(_loadtest_commands())[tuple(argv[1:])] is None, argv


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))


@pytest.mark.parametrize(
    "argv", [argv for _, argv in COMMANDS if _program(argv) == "make"], ids=" ".join
)
def test_each_make_command_names_a_target_and_passes_flags_that_parse(argv: list[str]) -> None:
    targets = [arg for arg in argv[1:] if "=" not in arg]
    assert targets and set(targets) <= _make_targets(), (targets, sorted(_make_targets()))
    for assignment in (arg for arg in argv[1:] if arg.startswith("LOADTEST_GATE=")):
        gate = tuple(assignment.removeprefix("LOADTEST_GATE=").split())
        assert _loadtest_errors(_loadtest_commands())[gate] is None, gate


def test_inline_commands_name_subcommands_and_flags_that_exist() -> None:
    """`tvision serve --health-port P` in the prose: the subcommand and each flag exist
    (`tvision bench*` names the bench commands, `tvision repo push/list/gc` three)."""
    commands = _subparsers(build_parser())
    loadtest_flags = set(_in_the_loadtest_parser("flags"))
    wrong = []
    for quoted in readme.inline_commands():
        words = quoted.split()
        flags = [word.strip("[]|") for word in words if word.strip("[]|").startswith("--")]
        if _program(words) == "tvision-loadtest":
            wrong += [(quoted, flag) for flag in flags if flag not in loadtest_flags]
            continue
        if words[1] == "...":
            continue
        command = words[1].rstrip("*")
        names = [command]
        if len(words) > 2 and f"{command} {words[2].split('/')[0]}" in commands:
            names = [f"{command} {name}" for name in words[2].split("/")]
        for name in names:
            if name not in commands:
                wrong.append((quoted, name))
            else:
                options = commands[name]._option_string_actions
                wrong += [(quoted, flag) for flag in flags if flag not in options]
    assert wrong == []


def test_every_path_into_the_repository_exists() -> None:
    missing = [(argv, arg) for _, argv in COMMANDS for arg in argv
               if arg.startswith(("k8s/", "./")) and not (ROOT / arg).exists()]  # fmt: skip
    assert missing == []


def test_the_by_hand_install_names_constraint_files_packages_and_extras_that_exist() -> None:
    (install,) = [argv for _, argv in COMMANDS if _program(argv) == "pip"]
    pairs = list(itertools.pairwise(install))
    constraints = [value for flag, value in pairs if flag == "-c"]
    editables = [value for flag, value in pairs if flag == "-e"]
    assert constraints and all((ROOT / path).is_file() for path in constraints), constraints
    for editable in editables:
        path, _, extras = editable.partition("[")
        pyproject = (ROOT / path / "pyproject.toml").read_text(encoding="utf-8")
        name = re.search(r'^name = "(.+)"$', pyproject, re.MULTILINE)
        assert name, f"{path}/pyproject.toml names no project"
        declared = metadata(name[1]).get_all("Provides-Extra") or []  # as installed
        assert set(filter(None, extras.rstrip("]").split(","))) <= set(declared), editable
    # The same constraint files and packages as `make install`'s (which the suite uses).
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    assert set(constraints) == set(re.findall(r"-c (\S+)", makefile))
    assert {path.strip('"') for path in editables} == {
        path.strip('"') for path in re.findall(r"-e (\S+)", makefile)
    }, editables


def test_programs_that_cannot_run_here_appear_only_where_the_readme_says_so() -> None:
    known = {"tvision", "tvision-loadtest", "make", "pip"} | SHELL | NEEDS_A_CLUSTER
    assert {_program(argv) for _, argv in COMMANDS} <= known
    for heading, argv in COMMANDS:
        if _program(argv) in NEEDS_A_CLUSTER:
            assert SAYS_IT_IS_NOT_RUN in readme.section(heading), (heading, argv)
