"""The docs keep up with the code: every setting and every command is documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from mediamirror.cli import cli
from mediamirror.config import declared, env_name

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
CLI_DOC = ROOT / "docs" / "cli.md"


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield " ".join(("mediamirror", *prefix, name))


@pytest.mark.parametrize("name", [f.name for f in declared()])
def test_every_setting_is_documented(name: str) -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    row = re.search(rf"^\| `{name}` \| `{env_name(name)}` \|", text, re.MULTILINE)
    assert row, f"{CONFIGURATION.name} has no table row for setting {name}"


def test_no_documented_setting_is_stale() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(\w+)` \| `MEDIAMIRROR_\w+` \|", text, re.MULTILINE))
    assert documented, f"no settings table in {CONFIGURATION.name}"
    assert documented <= {f.name for f in declared()}


@pytest.mark.parametrize("command", list(commands(cli)))
def test_every_command_is_documented(command: str) -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    assert re.search(rf"^\| `{re.escape(command)}(`| )", text, re.MULTILINE), (
        f"{CLI_DOC.name} has no table row for `{command}`"
    )


def test_no_documented_command_is_stale() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(mediamirror [a-z][a-z -]*?)(?:`| [A-Z\[])", text, re.M))
    assert documented <= set(commands(cli))
