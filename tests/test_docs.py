"""Docs that cannot drift: the quick start, the CI entry point and the settings table."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.config import settings_markdown
from pitstop.web.permissions import permissions_markdown
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    block = re.search(r"## Quick start.*?```\n(.*?)```", README, re.S)
    assert block, "README has no quick start block"
    commands = [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]
    assert commands == ["pip install '.[server]' && pitstop demo", "bash scripts/test.sh"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci.splitlines()


def test_settings_table_matches_the_code() -> None:
    table = README.split("<!-- settings:start -->\n")[1].split("<!-- settings:end -->")[0]
    assert table.strip() == settings_markdown().strip(), "regenerate with `pitstop settings --markdown`"


def test_permission_table_matches_the_code() -> None:
    table = README.split("<!-- permissions:start -->\n")[1].split("<!-- permissions:end -->")[0]
    assert table.strip() == permissions_markdown().strip(), "regenerate from pitstop.web.permissions"


def test_cli_help_lists_every_command_in_the_readme() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    commands = re.findall(r"^  (\w+)\s", result.output.split("Commands:")[1], re.M)
    assert commands
    for command in commands:
        assert f"pitstop {command}" in README, f"`pitstop {command}` is not documented in the README"


def _byof_commands() -> list[list[str]]:
    block = README.split("<!-- byof:start -->")[1].split("<!-- byof:end -->")[0]
    lines = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("```")]
    return [shlex.split(line) for line in lines]


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("pitstop serve did not come up")


@pytest.mark.heavy
@pytest.mark.slow
def test_bring_your_own_fleet_runs_as_written_without_python(tmp_path: Path) -> None:
    """The README's walk-through, command by command, in a fresh folder: fleet file → import →
    train → evaluate → serve, then the served API scores an imported machine with its type's model."""
    pitstop = str(Path(sys.executable).parent / "pitstop")
    commands = _byof_commands()
    assert [c[:2] for c in commands] == [
        ["pitstop", "simulate"],
        ["pitstop", "fleet"],
        ["pitstop", "fleet"],
        ["pitstop", "import"],
        ["pitstop", "import"],
        ["pitstop", "train"],
        ["pitstop", "evaluate"],
        ["pitstop", "serve"],
    ]
    outputs = {}
    for args in commands[:-1]:
        done = subprocess.run([pitstop, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stderr[-3000:]}"
        outputs[" ".join(args[1:3])] = done.stdout.strip().splitlines()[-1]
    imported = json.loads(outputs["import readings"])
    assert imported["stored"] > 10_000 and imported["rejected"] == 0
    evaluated = json.loads(outputs["evaluate --data-dir"])
    assert evaluated["n"] >= 3
    assert evaluated["rmse"] < evaluated["naive_rmse"]  # better than no model at all
    assert evaluated["component_accuracy"] is not None

    serve = commands[-1]
    port = int(serve[serve.index("--port") + 1])
    proc = subprocess.Popen(
        [pitstop, *serve[1:]], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_healthy(port, proc)
        token = (tmp_path / "orchard-data" / "admin-token").read_text().strip()
        body = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/predict",
            json={"machine_ids": ["H-001"]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert body.status_code == 200, body.text
        prediction = body.json()["predictions"][0]
        assert prediction["machine_type"] == "harvester"
        assert prediction["model"]["name"] == "pitstop-rul-harvester"
        assert 0 <= prediction["rul_lower"] <= prediction["rul"] <= prediction["rul_upper"]
    finally:
        _, err = proc.communicate(timeout=90)  # --for ends it
    assert proc.returncode == 0, err[-2000:]
