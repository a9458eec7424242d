"""`pitstop cluster up|status|down|init|render`: the scale-out topology on one machine, and its
compose file and Helm values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pitstop.cli_common import _errors, _settings

_data_dir = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pitstop-cluster"),
    show_default=True,
    help="Folder for the cluster's state (cluster.json, cluster.toml), logs and process folders.",
)


@click.group()
def cluster() -> None:
    """The scale-out topology on this machine (PostgreSQL, S3, NATS, API servers, processors, Dask)."""


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    from pitstop.config import Settings

    found: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or name not in Settings.model_fields:
            raise click.BadParameter(
                f"{item!r}: NAME=VALUE with NAME a setting (`pitstop settings`)", param_hint="--set"
            )
        found[name] = value
    return found


@cluster.command()
@_data_dir
@click.option(
    "--api-servers",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="`pitstop serve` processes.",
)
@click.option(
    "--processors",
    type=click.IntRange(1, 32),
    default=3,
    show_default=True,
    help="`pitstop process` workers.",
)
@click.option(
    "--dask-workers", type=click.IntRange(0, 32), default=2, show_default=True, help="Dask workers."
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=7400,
    show_default=True,
    help="PostgreSQL on it, S3 +1, NATS +2, Dask +3, API servers +10, +11, …",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="One more setting for every Pitstop process (repeatable).",
)
def up(
    data_dir: Path,
    api_servers: int,
    processors: int,
    dask_workers: int,
    base_port: int,
    overrides: tuple[str, ...],
) -> None:
    """Start the whole topology as background processes and wait until the API servers answer.

    PostgreSQL (ops DB and MLflow's store), a moto S3 endpoint (lake and model artifacts), nats-server
    with JetStream (the bus), the API servers (`pitstop serve --no-processor`), the processors
    (`pitstop process`), a Dask scheduler and workers. Everything is THROWAWAY: moto keeps objects in
    memory and each `up` starts from empty folders. As root, PostgreSQL's folder is
    /tmp/pitstop-cluster-<hash>/postgres (its user cannot reach a 0700 data dir). Then
    `pitstop --config DATA_DIR/cluster.toml …` talks to the cluster; `pitstop cluster down` stops it.
    """
    from pitstop.cluster.local import up as start
    from pitstop.cluster.topology import Topology

    with _errors():
        extra = _parse_set(overrides)
        topology = Topology(api_servers, processors, dask_workers, base_port)
        state = start(data_dir, topology, extra, click.echo)
        click.echo("")
        _table(data_dir)
        click.echo(
            f"\nsettings: pitstop --config {state['settings_file']} …  "
            f"(and `source {state['env_file']}` for S3)"
        )
        click.echo(f"admin token: {state['admin_token_file']}; logs: {state['logs']}")
        click.echo(f"stop: pitstop cluster down --data-dir {data_dir}")


def _table(data_dir: Path) -> None:
    from pitstop.cluster.local import status as rows_of

    rows = rows_of(data_dir)
    click.echo(f"{'service':16} {'state':6} {'pid':>8} {'port':>6}  log")
    for row in rows:
        pid = "" if row["pid"] is None else str(row["pid"])
        port = "" if row["port"] is None else str(row["port"])
        click.echo(f"{row['name']:16} {'up' if row['up'] else 'down':6} {pid:>8} {port:>6}  {row['log']}")


@cluster.command()
@_data_dir
@click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
def status(data_dir: Path, as_json: bool) -> None:
    """What runs, from the state file and a check of each process."""
    from pitstop.cluster.local import status as rows_of

    with _errors():
        rows = rows_of(data_dir)
        if as_json:
            for row in rows:
                click.echo(json.dumps(row))
        elif not rows:
            click.echo(f"no cluster in {data_dir} (`pitstop cluster up --data-dir {data_dir}`)")
        else:
            _table(data_dir)


@cluster.command()
@_data_dir
def down(data_dir: Path) -> None:
    """Stop every process of the cluster (SIGTERM, then SIGKILL) and PostgreSQL; safe to run twice."""
    from pitstop.cluster.local import down as stop

    with _errors():
        stopped = stop(data_dir)
        click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cluster.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Migrate the ops DB and MLflow's store and make the lake's tables (once, before the API servers
    and processors start: `cluster up`, compose and the Helm chart run it)."""
    from pitstop.platform import Platform

    with _errors():
        platform = Platform.open(_settings(ctx))
        try:
            for deployment in platform.deployments.values():
                deployment.registry.versions()  # MLflow makes its tables on first use: here, once
        finally:
            platform.close()
        click.echo("ops DB, MLflow store and lake ready")


@cluster.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("deploy"),
    show_default=True,
    help="Folder to write into (the repository's deploy/).",
)
def render(out: Path) -> None:
    """Write the compose file and the Helm chart's values from the topology (`pitstop cluster up`'s)."""
    from pitstop.cluster.render import render as write

    for path in write(out):
        click.echo(f"wrote {path}")
