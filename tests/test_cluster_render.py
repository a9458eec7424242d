"""The deploy files (compose, Helm, Dockerfile) cannot drift from the topology, the CLI or the settings."""

from __future__ import annotations

import json
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from distributed.cli import dask_scheduler, dask_worker

from pitstop.cli import cli
from pitstop.cluster.render import rendered
from pitstop.cluster.state import settings_toml
from pitstop.cluster.topology import Topology, cluster_env, pitstop_settings
from pitstop.config import Settings, load_settings
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
HELM = DEPLOY / "helm" / "pitstop"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((HELM / "values.yaml").read_text()))


def _dockerfile_cmd() -> list[str]:
    [line] = [ln for ln in (REPO / "Dockerfile").read_text().splitlines() if ln.startswith("CMD ")]
    return list(json.loads(line.removeprefix("CMD ")))


def _commands() -> list[list[str]]:
    """Every command the deploy files run in the Pitstop image."""
    found = [
        list(s["command"]) for s in _compose()["services"].values() if s.get("image") == "pitstop:latest"
    ]
    values = _values()
    found += [values[part]["command"] for part in ("init", "api", "processor")]
    found += [values["dask"][part]["command"] for part in ("scheduler", "worker")]
    return [*found, _dockerfile_cmd()]


def _env_names() -> set[str]:
    values = _values()
    names = set(_compose()["x-pitstop-env"]) | set(values["settings"]) | set(values["secrets"])
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            names |= {pair.split("=")[0] for pair in line.split()[1:]}
    return names


def test_the_committed_deploy_files_are_what_cluster_render_writes() -> None:
    for name, text in rendered().items():
        assert (DEPLOY / name).read_text() == text, (
            f"deploy/{name} is stale: run `pitstop cluster render --out deploy/`"
        )


def test_cluster_render_writes_the_files_where_it_says(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "render", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name, text in rendered().items():
        assert (tmp_path / name).read_text() == text


def _parse(argv: list[str]) -> click.Context:
    """Parse ``argv`` with the real click command it names (options, their types), not running it."""
    program, *args = argv
    if program == "pitstop":
        command: click.Command = cli
        name = "pitstop"
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            sub = command.get_command(click.Context(command), args[0])
            assert sub is not None, f"`{' '.join(argv)}`: no command {args[0]!r} under `{name}`"
            command, name, args = sub, f"{name} {args[0]}", args[1:]
    elif argv[:2] == ["dask", "scheduler"]:
        command, name, args = dask_scheduler.main, "dask scheduler", args[1:]
    elif argv[:2] == ["dask", "worker"]:
        command, name, args = dask_worker.main, "dask worker", args[1:]
    else:
        raise AssertionError(f"unknown program in {argv}")
    assert not isinstance(command, click.Group), f"`{' '.join(argv)}` names a group, not a command"
    return command.make_context(name, list(args))


def test_every_command_and_flag_the_deploy_files_run_exists_in_the_cli() -> None:
    commands = _commands()
    assert {c[1] for c in commands if c[0] == "pitstop"} == {"cluster", "serve", "process"}
    assert {tuple(c[:2]) for c in commands if c[0] == "dask"} == {("dask", "scheduler"), ("dask", "worker")}
    for argv in commands:
        _parse(argv)  # a flag the CLI does not know raises click.UsageError here
    for service in Topology().services():  # and what `pitstop cluster up` runs on this machine
        if service.argv[0] in ("pitstop", "dask"):
            _parse(list(service.argv))


def test_a_flag_the_cli_does_not_know_is_caught() -> None:
    with pytest.raises(click.UsageError):
        _parse(["pitstop", "serve", "--no-such-flag"])
    with pytest.raises(AssertionError):
        _parse(["pitstop", "nosuchcommand"])


def test_every_pitstop_variable_the_deploy_files_set_is_a_setting() -> None:
    names = _env_names()
    assert "PITSTOP_OPS_DB_URL" in names and "PITSTOP_LAKE_STORAGE_OPTIONS" in names
    unknown = {n for n in names if n.startswith("PITSTOP_") and n[8:].lower() not in Settings.model_fields}
    assert not unknown, f"not settings: {sorted(unknown)}"


def test_the_deploy_settings_load_as_the_scale_out_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _values()["settings"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.ops_db_url == "postgresql+psycopg://pitstop@pitstop-postgres:5432/pitstop"
    assert settings.lake_uri == "s3://pitstop/lake" and not settings.lake_is_local
    assert settings.lake_storage_options["endpoint"] == "http://pitstop-s3:9000"
    assert settings.bus_backend == "nats" and settings.nats_url == "nats://pitstop-nats:4222"
    assert settings.bus_partitions == 12


def test_the_local_cluster_env_loads_as_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    topology = Topology(base_port=9100)
    for name, value in cluster_env(topology.endpoints()).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.ops_db_url == "postgresql+psycopg://pitstop@127.0.0.1:9100/pitstop"
    assert settings.mlflow_tracking_uri == "postgresql+psycopg://pitstop@127.0.0.1:9100/mlflow"
    assert settings.lake_storage_options["endpoint"] == "http://127.0.0.1:9101"
    assert settings.nats_url == "nats://127.0.0.1:9102"
    assert settings.bus_backend == "nats" and settings.bus_partitions == 12


def test_the_cluster_settings_file_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    values = pitstop_settings(Topology().endpoints())
    path = tmp_path / "cluster.toml"
    path.write_text(settings_toml({"data_dir": str(tmp_path / "cli"), **values}))
    assert tomllib.loads(path.read_text()) == {"data_dir": str(tmp_path / "cli"), **values}
    settings = load_settings(path)
    assert settings.mlflow_artifacts_uri == "s3://pitstop/mlartifacts"
    assert settings.lake_storage_options == values["lake_storage_options"]


def test_the_helm_templates_read_only_values_that_exist() -> None:
    values = _values()
    used = set()
    for template in (HELM / "templates").iterdir():
        used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert {"api.replicas", "processor.replicas", "dask.worker.replicas", "settings", "secrets"} <= used
    for path in used:
        node: Any = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f".Values.{path} is not in values.yaml"
            node = node[part]


def test_the_topology_runs_the_issue_s_services() -> None:
    roles = [s.role for s in Topology().services()]
    assert roles.count("api") == 2 and roles.count("processor") == 3 and roles.count("dask-worker") == 2
    assert {"postgres", "s3", "nats", "dask-scheduler"} <= set(roles)
    compose = _compose()["services"]
    assert (
        compose["processor"]["deploy"]["replicas"] == 3 and compose["dask-worker"]["deploy"]["replicas"] == 2
    )
    assert len([name for name in compose if name.startswith("api-")]) == 2


def test_cluster_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]  # the NATS port (base + 2); the ports before it are free
        for other in (port - 2, port - 1):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", other)) == 0:
                    pytest.skip("a port below the taken one is in use too")
        result = CliRunner().invoke(
            cli, ["cluster", "up", "--data-dir", str(tmp_path / "c"), "--base-port", str(port - 2)]
        )
    assert result.exit_code == 2, result.output
    assert "error [port_taken]" in result.output and f"port {port} " in result.output
    assert not (tmp_path / "c" / "cluster.json").exists()


def test_cluster_up_refuses_a_setting_that_does_not_exist(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "up", "--data-dir", str(tmp_path), "--set", "no_such=1"])
    assert result.exit_code == 2 and "NAME=VALUE with NAME a setting" in result.output


def test_status_and_down_without_a_cluster_say_so(tmp_path: Path) -> None:
    status = CliRunner().invoke(cli, ["cluster", "status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 0 and "no cluster in" in status.output
    down = CliRunner().invoke(cli, ["cluster", "down", "--data-dir", str(tmp_path)])
    assert down.exit_code == 0 and "nothing was running" in down.output
