"""Docs that cannot drift: the quick start, the CI entry point and the settings table."""

from __future__ import annotations

import re

from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.config import settings_markdown
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    block = re.search(r"## Quick start.*?```\n(.*?)```", README, re.S)
    assert block, "README has no quick start block"
    commands = [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]
    assert commands == ["pip install . && pitstop demo", "bash scripts/test.sh"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci.splitlines()


def test_settings_table_matches_the_code() -> None:
    table = README.split("<!-- settings:start -->\n")[1].split("<!-- settings:end -->")[0]
    assert table.strip() == settings_markdown().strip(), "regenerate with `pitstop settings --markdown`"


def test_cli_help_lists_every_command_in_the_readme() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    commands = re.findall(r"^  (\w+)\s", result.output.split("Commands:")[1], re.M)
    assert commands
    for command in commands:
        assert f"pitstop {command}" in README, f"`pitstop {command}` is not documented in the README"
