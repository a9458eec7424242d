"""``pitstop agent``: the device side (store and forward, edge scoring); ``pitstop agent status``.

Needs only ``pitstop[agent]``: nothing here imports the server's libraries.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import click

from pitstop.cli_common import _errors, _settings

dir_option = click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The agent's folder: buffer and model cache (default: agent_dir, ./pitstop-agent).",
)


@click.group(invoke_without_command=True)
@click.option("--server", default=None, help="The Pitstop server's URL, e.g. http://pitstop.local:8000.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding this device's token (from `pitstop devices add`).",
)
@click.option("--machine-id", default=None, help="The machine this agent runs on.")
@click.option(
    "--source",
    default=None,
    help="Where readings come from: tail:PATH (CSV/NDJSON being appended to), stdin, stdin:csv, "
    "mqtt://host:port/topic, sim:harvester[?rate=10], plugin:NAME[?key=value].",
)
@dir_option
@click.pass_context
def agent(
    ctx: click.Context,
    server: str | None,
    token_file: Path | None,
    machine_id: str | None,
    source: str | None,
    folder: Path | None,
) -> None:
    """Run the device agent: buffer every reading on disk, forward batches when the link is up,
    score on the device and alert locally while offline. Settings: agent_* (pitstop settings)."""
    if ctx.invoked_subcommand is not None:
        return
    from pitstop.agent.runner import Agent, AgentConfig

    with _errors():
        settings = _settings(ctx)
        config = AgentConfig.from_settings(
            settings,
            server=server,
            token_file=token_file,
            machine_id=machine_id,
            source=source,
            folder=folder,
        )
        runner = Agent(config)

        def stop(signum: int, frame: Any) -> None:
            runner.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        click.echo(
            f"agent for {config.machine_id}: {config.source} -> {config.server} "
            f"(buffer {config.folder / 'buffer.db'}, {runner.buffer.depth:,} waiting)",
            err=True,
        )
        runner.run()


@agent.command("status")
@dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def agent_status(ctx: click.Context, folder: Path | None, as_json: bool) -> None:
    """Buffer depth, last send, link state and model version of the agent in --dir."""
    from pitstop.agent.runner import status

    with _errors():
        report = status(folder or _settings(ctx).agent_dir)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    running = f"running (pid {report['pid']})" if report["running"] else "not running"
    since = f" since {report['link_since']}" if report["link_since"] else ""
    lines = [
        f"agent       {report['machine_id'] or '?'} -> {report['server'] or '?'}: {running}",
        f"link        {report['link']}{since}"
        + (f" ({report['last_error']})" if report["last_error"] else ""),
        f"buffer      {report['buffer_depth']:,} readings waiting (next seq {report['next_seq']})",
        f"last send   {report['last_send'] or 'never'}"
        + (f" ({report['seconds_since_send']} s ago)" if report["seconds_since_send"] is not None else ""),
        f"sent        {report['sent']:,} ({report['duplicates']:,} were already there)",
        f"thinned     {report['thinned']:,}   dropped {report['dropped']:,}   rejected {report['rejected']:,}"
        f"   source errors {report['source_errors']:,}",
        f"clock       {report['clock']['offset_source'] or 'not yet checked'}"
        f" ({report['clock']['corrections']} corrections,"
        f" {report['clock']['estimated_readings']:,} estimated)",
        f"model       {report['model_version'] or 'none'}",
    ]
    click.echo("\n".join(lines))
