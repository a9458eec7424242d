"""The ``pitstop`` command: one verb per stage."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pitstop import __version__
from pitstop.cli_common import (
    PitstopGroup,
    _errors,
    _progress_bar,
    _settings,
    data_dir_option,
    tune_option,
)
from pitstop.config import describe_settings, settings_markdown
from pitstop.errors import ConfigError

if TYPE_CHECKING:
    from pitstop.platform import Platform

log = logging.getLogger("pitstop")


def _setup_logging(verbose: bool, config: Path | None) -> None:
    from pitstop.config import load_settings
    from pitstop.logs import configure

    try:
        fmt = load_settings(config).log_format
    except ConfigError:
        fmt = "auto"  # the command itself reports the bad setting
    configure(verbose, fmt)


@click.group(
    cls=PitstopGroup,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "PITSTOP"},
)
@click.version_option(__version__, prog_name="pitstop")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="TOML settings file.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """Pitstop: predictive maintenance for machine fleets."""
    _setup_logging(verbose, config)
    os.umask(0o077)  # what Pitstop writes (databases, lake, models, secrets) is the owner's alone
    ctx.ensure_object(dict)["config"] = config


@cli.command()
@data_dir_option
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--host", default=None, help="HTTP address (default 127.0.0.1).")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Replay speed: readings per second per machine.",
)
@click.option(
    "--for",
    "duration",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Stop after this many seconds of serving, then print a summary.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
@click.option(
    "--fleet",
    type=click.Choice(["turbofan", "harvesters"]),
    default="turbofan",
    show_default=True,
    help="turbofan: NASA C-MAPSS FD001 (real data); harvesters: the simulated orange-harvester fleet "
    "(default data dir ./pitstop-data-harvesters).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    data_dir: Path | None,
    port: int | None,
    host: str | None,
    speed: float,
    duration: float | None,
    as_json: bool,
    fleet: str,
) -> None:
    """Run the whole loop on one machine: seed, train, serve, replay a live fleet.

    Last season (C-MAPSS FD001 training engines, run to failure) seeds the lake; a LightGBM RUL
    model is trained if there is no champion; then the API, dashboard and processor start and the
    FD001 test engines replay as the live fleet through the ingest endpoint. With ``--fleet
    harvesters`` the same loop runs on simulated orange harvesters (hours, a fleet file, history
    brought in by the importer), each live harvester through its own edge agent with coverage gaps.
    """
    from pitstop.demo import run_demo
    from pitstop.platform import Platform

    with _errors():
        if speed <= 0:
            raise click.BadParameter("must be positive", param_hint="--speed")
        settings = _settings(ctx, data_dir=data_dir, port=port, host=host)
        if fleet == "harvesters" and data_dir is None and settings.data_dir == Path("pitstop-data"):
            settings = _settings(ctx, data_dir=Path("pitstop-data-harvesters"), port=port, host=host)
        click.echo(f"pitstop {__version__}: data dir {settings.data_dir.resolve()}")
        if fleet == "harvesters":
            from pitstop.demo_harvesters import open_platform

            platform = open_platform(settings, click.echo)
        else:
            platform = Platform.open(settings)
        update, close = _progress_bar("training")
        try:
            summary = run_demo(
                platform,
                speed=speed,
                duration=duration,
                echo=click.echo,
                progress=_closing(update, close),
                fleet=fleet,
            )
        finally:
            close()
            platform.close()
        click.echo("stopped. summary:")
        for line in summary.lines():
            click.echo(f"  {line}")
        if as_json:
            click.echo(json.dumps(summary.__dict__, default=str))


def _closing(
    update: Callable[[str, int, int], None], close: Callable[[], None]
) -> Callable[[str, int, int], None]:
    def progress(stage: str, done: int, total: int) -> None:
        update(stage, done, total)
        if done >= total:
            close()

    return progress


@cli.command()
@data_dir_option
@click.option("--lake-version", type=int, default=None, help="Telemetry table version (default newest).")
@click.option(
    "--alias",
    default="champion",
    show_default=True,
    help="Alias to point at the new version ('' for none).",
)
@tune_option
@click.option(
    "--machine-type",
    "machine_types",
    multiple=True,
    help="Machine type to train (repeatable; default: every type of the fleet).",
)
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS",
    help="Compute features and models on Dask: a scheduler (tcp://host:8786), or 'local' for an "
    "in-process cluster. Needs pitstop[scale].",
)
@click.option(
    "--dask-workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Workers of the --dask local cluster.",
)
@click.pass_context
def train(
    ctx: click.Context,
    data_dir: Path | None,
    lake_version: int | None,
    alias: str,
    tune_trials: int,
    machine_types: tuple[str, ...],
    dask_address: str | None,
    dask_workers: int,
) -> None:
    """Train each machine type's RUL model on a lake version, log it to MLflow and register it
    (one registered model per type, ``<model_name>-<type>``, with its own aliases).

    With ``--dask``, features are computed on the Dask workers machine group by machine group
    (each task reads only its machines' rows) and LightGBM trains with ``lightgbm.dask``.

    One JSON line per type trained; the last line is the last type's."""
    from contextlib import ExitStack

    from pitstop.errors import ValidationError
    from pitstop.platform import Platform
    from pitstop.training import train_and_register

    if dask_address and tune_trials:
        raise click.UsageError("--tune runs single-node: leave out --dask or --tune")
    with _errors(), ExitStack() as stack:
        platform = Platform.open(_settings(ctx, data_dir=data_dir))
        stack.callback(platform.close)
        client = None
        if dask_address:
            from pitstop.training.on_dask import dask_client

            client = stack.enter_context(dask_client(dask_address, dask_workers))
        failed: list[str] = []
        types = list(machine_types) or list(platform.fleet.machine_types)
        for name in types:
            platform.registry_for(name)  # an unknown type fails before any training
        for name in types:
            registry = platform.registry_for(name)
            update, close = _progress_bar(f"training {name}")
            try:
                result = train_and_register(
                    platform,
                    alias=alias or None,
                    lake_version=lake_version,
                    tune_trials=tune_trials,
                    progress=update,
                    machine_type=name,
                    dask=client,
                )
            except ValueError as exc:  # the other types still train
                click.echo(f"error [cannot_train]: cannot train {name}: {exc}", err=True)
                failed.append(name)
                continue
            finally:
                close()
            m = result.bundle.metrics
            click.echo(
                f"{name}: version {result.version} of {registry.model_name} on {result.rows:,} rows of "
                f"{result.machines} machines, CV RMSE {m['cv_rmse']:.2f}",
                err=True,
            )
            click.echo(
                json.dumps(
                    {
                        "machine_type": name,
                        "model": registry.model_name,
                        "version": result.version,
                        "alias": alias or None,
                        "lake_version": result.lake_version,
                        "seconds": round(result.seconds, 2),
                        "rul_cap": result.bundle.rul_cap,
                        **m,
                    }
                )
            )
        if failed:
            raise ValidationError(f"could not train {', '.join(failed)} (see above)", code="cannot_train")


@cli.command()
@data_dir_option
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--host", default=None, help="HTTP address (default 127.0.0.1).")
@click.option(
    "--processor/--no-processor",
    default=True,
    show_default=True,
    help="Run the stream processor in this process (else run `pitstop process` beside it).",
)
@click.option(
    "--for",
    "duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    data_dir: Path | None,
    port: int | None,
    host: str | None,
    processor: bool,
    duration: float | None,
) -> None:
    """Serve the API, dashboard and processor over an existing data directory (no replay)."""
    import threading

    import uvicorn

    from pitstop.demo import check_port
    from pitstop.platform import Platform
    from pitstop.processor import Processor
    from pitstop.web import create_app
    from pitstop.web.app import server_config

    with _errors():
        settings = _settings(ctx, data_dir=data_dir, port=port, host=host)
        if processor and settings.bus_backend == "nats" and settings.bus_partitions > 1:
            raise ConfigError(
                "with bus_partitions > 1 run `pitstop serve --no-processor` and `pitstop process` "
                "workers beside it (they lease the partitions among themselves)"
            )
        check_port(settings.host, settings.port)
        platform = Platform.open(settings)
        proc = None
        if processor:
            proc = Processor(platform)
            proc.start()
        else:
            for deployment in platform.deployments.values():
                deployment.load()  # a type without a champion yet is followed until it has one
        app = create_app(platform, proc)
        mqtt = None
        if settings.mqtt_intake:
            if settings.bus_backend != "nats":
                raise ConfigError("mqtt_intake needs bus_backend = nats (the NATS server is the MQTT broker)")
            from pitstop.ingest.mqtt import MqttIntake

            mqtt = MqttIntake(app.state.intake, settings.nats_url)
            mqtt.start()
            click.echo("MQTT intake: devices publish to pitstop/mqtt/<machine_id> (QoS 1)")
        click.echo(f"serving http://{settings.host}:{settings.port}  (Ctrl-C to stop)")
        if app.state.users.count() == 0:
            click.echo(
                "no users yet: `pitstop users add NAME --role admin` to log in to the dashboard "
                f"(the API takes the admin token in {settings.data_dir / 'admin-token'})"
            )
        server = uvicorn.Server(server_config(app, settings))
        if duration is not None:
            timer = threading.Timer(duration, lambda: setattr(server, "should_exit", True))
            timer.daemon = True
            timer.start()
        try:
            server.run()
        except KeyboardInterrupt:
            pass  # graceful shutdown already happened
        finally:
            if mqtt is not None:
                mqtt.stop()
            if proc is not None:
                proc.stop(drain=True)
            platform.close()


@cli.command()
@data_dir_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run (bus_backend = nats): each takes its share of the bus partitions by "
    "lease, and takes over a dead one's within seconds. Workers in other `pitstop process` on other "
    "hosts share the partitions the same way.",
)
@click.pass_context
def process(ctx: click.Context, data_dir: Path | None, workers: int) -> None:
    """Run the stream processor alone: bus → lake → features → scores → work orders."""
    import signal
    import threading

    from pitstop.platform import Platform
    from pitstop.processor import Processor

    with _errors():
        settings = _settings(ctx, data_dir=data_dir)
        if settings.bus_backend != "nats" and workers > 1:
            raise ConfigError(
                "--workers needs bus_backend = nats with bus_partitions > 1: the embedded SQLite bus "
                "has one processor"
            )
        if workers > 1:
            from pitstop.processor.supervise import supervise

            supervise(workers, ctx.ensure_object(dict).get("config"), data_dir)
            return
        platform = Platform.open(settings)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if settings.bus_backend == "nats":
            from pitstop.processor.partitions import PartitionWorker

            worker = PartitionWorker(platform)
            worker.start()  # (its partitions bootstrap later, as it leases them: nothing frozen)
            click.echo(
                f"worker {worker.worker}: processing the share of {settings.bus_partitions} partition(s) of "
                f"{settings.nats_url} it leases (Ctrl-C to stop)"
            )
            finish: Callable[[], None] = worker.stop
        else:
            proc = Processor(platform)
            proc.start(freeze=True)
            click.echo(f"processing {settings.bus_path} (Ctrl-C to stop)")
            finish = lambda: proc.stop(drain=False)  # noqa: E731
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            finish()
            platform.close()


@cli.command()
@data_dir_option
@click.argument("question", nargs=-1, required=True)
@click.option("--conversation", "conversation_id", default=None, help="Continue this conversation (its id).")
@click.option(
    "--user",
    default=None,
    help="Ask as this Pitstop user, within their role (default: the local operator `cli`, admin).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reply (answer, sources, actions) as JSON.")
@click.pass_context
def ask(
    ctx: click.Context,
    data_dir: Path | None,
    question: tuple[str, ...],
    conversation_id: str | None,
    user: str | None,
    as_json: bool,
) -> None:
    """Ask the maintenance assistant about the fleet or the manuals; answers cite sources.

    Follow-ups go in the same conversation (--conversation ID, printed with each answer). An action
    ("close WO-12 as fault confirmed") is proposed first: answer `yes` in the same conversation."""
    from pitstop.assistant import Assistant
    from pitstop.platform import Platform
    from pitstop.web.permissions import role_has

    with _errors():
        platform = Platform.open(_settings(ctx, data_dir=data_dir))
        try:
            name, role = _cli_user(platform, user)
            assistant = Assistant.from_platform(platform, role_has)
            reply = assistant.chat(" ".join(question), user=name, role=role, conversation_id=conversation_id)
        finally:
            platform.close()
        if as_json:
            click.echo(json.dumps(reply.to_dict()))
            return
        click.echo(reply.answer)
        if reply.sources:
            click.echo("\nsources: " + ", ".join(f"{s['kind']}:{s['id']}" for s in reply.sources))
        if any(a["state"] == "proposed" for a in reply.actions):
            click.echo(f"\nanswer with: pitstop ask yes --conversation {reply.conversation_id}")
        else:
            click.echo(f"\nconversation: {reply.conversation_id}")


def _cli_user(platform: Platform, user: str | None) -> tuple[str, str]:
    """Who asks from the command line: a named user with their role, or the local operator."""
    if user is None:
        return "cli", "admin"
    from pitstop.errors import NotFoundError
    from pitstop.web.users import Users

    found = next((u for u in Users(platform.db).list() if u["name"] == user), None)
    if found is None or found.get("disabled"):
        raise NotFoundError(
            f"no active user {user!r}; `pitstop users list` shows them", code="user_not_found"
        )
    return user, str(found["role"])


@cli.command("settings")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (as in the README).")
def settings_cmd(markdown: bool) -> None:
    """List every setting: name, type, default, and what it does."""
    if markdown:
        click.echo(settings_markdown())
        return
    for name, kind, default, help_text in describe_settings():
        click.echo(f"{name:28} {kind:8} {default:24} {help_text}  [PITSTOP_{name.upper()}]")


def _register() -> None:
    from pitstop.cli_agent import agent
    from pitstop.cli_alerts import alerts
    from pitstop.cli_backtest import backtest
    from pitstop.cli_backup import backup, restore
    from pitstop.cli_cluster import cluster
    from pitstop.cli_deployments import deployments
    from pitstop.cli_fleet import fleet
    from pitstop.cli_import import import_group
    from pitstop.cli_lake import lake_upkeep
    from pitstop.cli_manuals import manuals
    from pitstop.cli_models import audit, benchmark, evaluate, promote, retrain, rollback, score
    from pitstop.cli_ops import devices, lake, quarantine
    from pitstop.cli_sim import simulate
    from pitstop.cli_users import users

    commands = (
        fleet,
        import_group,
        simulate,
        devices,
        quarantine,
        lake,
        evaluate,
        benchmark,
        backtest,
        promote,
        rollback,
        score,
        retrain,
        deployments,
        audit,
        users,
        alerts,
        backup,
        restore,
        manuals,
        cluster,
        agent,
    )
    for group in commands:
        cli.add_command(group)
    lake.add_command(lake_upkeep)


_register()


def main() -> None:
    cli(prog_name="pitstop")


if __name__ == "__main__":
    main()
