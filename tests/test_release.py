"""Release hygiene: the licence, the changelog and one version everywhere it is reported."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pitstop import __version__
from pitstop.cli import cli
from pitstop.platform import Platform
from pitstop.web.app import create_app
from tests.conftest import REPO, admin_headers


def test_the_licence_is_the_apache_2_0_text_pyproject_declares() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert 'license = "Apache-2.0"' in (REPO / "pyproject.toml").read_text()


def test_the_changelog_has_an_entry_for_the_current_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in changelog


def test_pitstop_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"pitstop, version {__version__}"


def test_every_model_version_and_its_run_record_the_pitstop_version(trained: Platform) -> None:
    [version] = trained.registry.versions()
    assert version["tags"]["pitstop.pitstop_version"] == __version__
    run = trained.registry.client.get_run(version["run_id"])
    assert run.data.tags["pitstop.pitstop_version"] == __version__


def test_status_reports_the_version(trained: Platform) -> None:
    with TestClient(create_app(trained), headers=admin_headers(trained)) as client:
        r = client.get("/api/v1/status")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == __version__


def _pins(lock: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", lock.read_text(), re.M)
    return {canonicalize_name(name): version for name, version in found}


def _requirements(project: dict[str, Any], extras: tuple[str, ...]) -> list[str]:
    """The base's and the extras' requirements, with an extra's `pitstop[...]` (dev brings
    server and agent, scale brings server) replaced by what those extras require."""
    wanted = list(project["project"]["dependencies"])
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in project["project"]["optional-dependencies"][extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == "pitstop":
                todo.extend(req.extras)
            else:
                wanted.append(line)
    return wanted


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("lock.txt", ("server",)), ("lock-agent.txt", ("agent",)), ("lock-dev.txt", ("dev",))],
)
def test_the_lock_pins_every_requirement_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    """A range changed or a dependency added in pyproject.toml without `bash scripts/lock.sh`
    would be installed unhashed by scripts/test.sh after .ci/run's locked install."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*_requirements(project, extras), *project["build-system"]["requires"]]
    pins = _pins(REPO / "requirements" / lock)
    env = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
    for line in wanted:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/{lock}: run `bash scripts/lock.sh`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} pins {req.name}=={pins[name]}, outside {req.specifier}: "
            "run `bash scripts/lock.sh`"
        )


def test_dev_and_the_platform_extras_bring_the_server() -> None:
    """`pip install '.[dev]'` (scripts/test.sh) must bring everything; an extra for the platform's
    engines is useless without the platform."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    expanded = {
        name: _requirements({"project": {"dependencies": [], "optional-dependencies": extras}}, (name,))
        for name in extras
    }
    server = set(extras["server"])
    for name in ("dev", "scale", "nats", "dense", "bench"):
        assert server <= set(expanded[name]), f"the {name} extra does not bring pitstop[server]"
    assert set(extras["agent"]) <= set(expanded["dev"]), "the dev extra does not bring pitstop[agent]"
