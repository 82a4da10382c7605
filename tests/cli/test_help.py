"""What ``--help`` says: every flag's text and default, ``--endpoint-url`` on every command
that reads or writes an s3:// location, and the same figures as the README."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from tests.readme import one_block, section
from tvision.cli import build_parser
from tvision.cli.bench import QUICK_RUN_TIME


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its words (``repo push``), nested ones included."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                prefix = parser.prog.split(" ", 1)[1] + " " if " " in parser.prog else ""
                found[f"{prefix}{name}"] = child
                found.update(_subparsers(child))
    return found


COMMANDS = _subparsers(build_parser())


def _help_of(command: str, flag: str) -> str:
    (action,) = [a for a in COMMANDS[command]._actions if flag in a.option_strings]
    return " ".join((action.help or "").split())


@pytest.mark.parametrize(
    ("flag", "default"),
    [
        ("--outputs", "default: logits"),
        ("--mean", "default: 0,0,0"),
        ("--std", "default: 1,1,1"),
        ("--scale", "default: 1"),
        ("--channel-order", "default: RGB"),
        ("--resize-short-px", "derived from the model's input"),
        ("--crop-px", "derived from the model's input"),
    ],
)
def test_export_help_shows_each_bring_your_own_default(flag: str, default: str) -> None:
    assert default in _help_of("export", flag)


@pytest.mark.parametrize(
    ("flag", "default"),
    [
        ("--address", "default: 127.0.0.1"),
        ("--grpc-port", "default: 8001"),
        ("--http-port", "default: 8000"),
        ("--metrics-port", "default: 8002"),
        ("--ready-timeout-s", "default: 240"),
    ],
)
def test_serve_help_explains_the_address_and_ports(flag: str, default: str) -> None:
    assert default in _help_of("serve", flag)


# The commands whose arguments name a store location: a positional or --repository.
STORE_COMMANDS = ["export", "serve", "validate", "repo verify", "repo push", "repo list", "repo gc"]


def test_every_command_that_reads_a_store_takes_endpoint_url() -> None:
    for command in STORE_COMMANDS:
        assert "AWS_ENDPOINT_URL" in _help_of(command, "--endpoint-url"), command
    # And no command (a group such as ``repo`` aside) names s3:// in its help without it.
    for command, parser in COMMANDS.items():
        group = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if "s3://" in parser.format_help() and not group:
            assert command in STORE_COMMANDS, f"{command} names s3:// but is not listed"


def test_the_readme_object_storage_block_gives_each_s3_command_its_endpoint() -> None:
    block = one_block("Model repositories in object storage", "sh", "repo push")
    assert re.search(r"^S3=\S+", block, re.MULTILINE), "the block sets the endpoint once"
    parser = build_parser()
    commands = [line for line in block.splitlines() if line.startswith("tvision ")]
    reading_s3 = [line for line in commands if "s3://" in line]
    assert len(reading_s3) >= 6, reading_s3
    for line in reading_s3:
        words = shlex.split(line.split("  #", 1)[0])[1:]
        assert "--endpoint-url" in words, f"works only with AWS_ENDPOINT_URL set: {line}"
        args = parser.parse_args([word.replace("$S3", "http://minio:9000") for word in words])
        assert args.endpoint_url == "http://minio:9000", line


def test_bench_quick_says_the_measured_time_as_the_readme_does() -> None:
    assert QUICK_RUN_TIME in _help_of("bench", "--quick")
    performance = " ".join(section("Performance").split())
    assert f"`tvision bench --quick` runs in {QUICK_RUN_TIME}" in performance
