"""What each install brings: `pitstop[agent]` pulls no server parts, and the CLI and the agent run
without them (an interpreter where importing any server module fails, as in an agent-only install)."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.utils import canonicalize_name

from pitstop.cli import cli
from pitstop.cli_common import SERVER_MODULES
from tests.conftest import REPO

# what an agent-only install must not have (the issue: no MLflow, no Polars/Delta, no FastAPI)
SERVER_ONLY = (
    "mlflow",
    "polars",
    "deltalake",
    "pyarrow",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "lightgbm",
    "scipy",
    "numba",
    "pandas",
    "uvicorn",
)

# Runs first in the child: any import of a server module fails as it would where it is not installed
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {sorted(set(SERVER_ONLY) | SERVER_MODULES)!r}
early = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not early, f"imported before the blocker: {{early}}"

class AgentInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, AgentInstall())
"""


def _without_server(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _pitstop_without_server(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _without_server(
        f"import sys\nsys.argv = ['pitstop', *{args!r}]\nfrom pitstop.cli import main\nmain()\n", cwd
    )


def _commands(help_text: str) -> list[str]:
    return re.findall(r"^  (\w[\w-]*)\s", help_text.split("Commands:")[1], re.M)


def _pins(lock: str) -> set[str]:
    text = (REPO / "requirements" / lock).read_text()
    return {canonicalize_name(n) for n in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, re.M)}


def test_pitstop_help_lists_every_command_without_the_server_parts(tmp_path: Path) -> None:
    result = _pitstop_without_server(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    full = CliRunner().invoke(cli, ["--help"])
    assert _commands(result.stdout) == _commands(full.output)
    assert "demo" in _commands(result.stdout)


def test_pitstop_settings_lists_the_table_without_the_server_parts(tmp_path: Path) -> None:
    result = _pitstop_without_server(["settings"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^data_dir\s", result.stdout, re.M), result.stdout


@pytest.mark.parametrize(
    ("args", "command"),
    [(["demo", "--for", "1"], "pitstop demo"), (["quarantine", "list"], "pitstop quarantine")],
)
def test_a_server_command_without_the_server_parts_ends_with_one_server_missing_line(
    tmp_path: Path, args: list[str], command: str
) -> None:
    result = _pitstop_without_server(args, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"error \[server_missing\]: {command} needs the server parts: "
        r"pip install 'pitstop\[server\]' \(missing module (\w+)\)",
        last,
    ), last
    assert list(tmp_path.iterdir()) == [], "nothing is written before the command fails"


def test_a_missing_module_outside_the_server_parts_is_not_called_server_missing(tmp_path: Path) -> None:
    """Only the server's modules mean "install pitstop[server]"; any other stays a real error."""
    result = _without_server(
        """
        import sys
        import click
        from pitstop.cli import cli
        @cli.command("needs-dask")
        def needs_dask():
            import dask_missing_for_this_test  # noqa: F401
        sys.argv = ["pitstop", "needs-dask"]
        cli.main(prog_name="pitstop")
        """,
        tmp_path,
    )
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr and "server_missing" not in result.stderr


def test_pitstop_agent_runs_without_the_server_parts(tmp_path: Path) -> None:
    if importlib.util.find_spec("pitstop.cli_agent") is None:
        pytest.skip("pitstop.cli_agent does not exist yet")
    result = _pitstop_without_server(["agent", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: pitstop agent" in result.stdout


def test_every_agent_module_imports_without_the_server_parts(tmp_path: Path) -> None:
    if importlib.util.find_spec("pitstop.agent") is None:
        pytest.skip("pitstop.agent does not exist yet")
    result = _without_server(
        """
        import importlib, pkgutil
        import pitstop.agent
        names = [m.name for m in pkgutil.walk_packages(pitstop.agent.__path__, "pitstop.agent.")]
        for name in names:
            importlib.import_module(name)
        print(len(names) + 1)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 1


def test_the_agent_lock_holds_no_server_part() -> None:
    """requirements/lock-agent.txt is the resolved closure of the base plus the `agent` extra
    (tests/test_release.py checks it pins every one of their requirements)."""
    pins = _pins("lock-agent.txt")
    assert {"click", "httpx", "numpy", "pydantic", "zstandard", "paho-mqtt"} <= pins
    server = sorted(p for p in pins if p.partition("-")[0] in SERVER_ONLY or p.startswith("mlflow"))
    assert server == [], f"the agent install pulls {server}: keep them in the server extra"


def _imported_modules(root: Path) -> set[str]:
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"pitstop"}


def test_server_modules_name_every_server_module_the_code_imports() -> None:
    """The CLI says `server_missing` for the modules in SERVER_MODULES: every module the code imports
    from the server lock is one, and none comes with the agent install."""
    distributions = packages_distributions()
    agent, server = _pins("lock-agent.txt"), _pins("lock.txt")

    def pinned_in(module: str, pins: set[str]) -> bool:
        return any(canonicalize_name(d) in pins for d in distributions.get(module, ()))

    imported = _imported_modules(REPO / "src" / "pitstop")
    missing = sorted(m for m in imported if pinned_in(m, server) and not pinned_in(m, agent))
    missing = [m for m in missing if m not in SERVER_MODULES]
    assert missing == [], f"add {missing} to SERVER_MODULES in pitstop/cli_common.py"
    wrong = sorted(m for m in SERVER_MODULES if pinned_in(m, agent) or not pinned_in(m, server))
    assert wrong == [], f"{wrong} in SERVER_MODULES but not a server-only module"
