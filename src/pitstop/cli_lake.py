"""`pitstop lake upkeep`: one pass of lake upkeep by hand (the processor runs it on a schedule)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pitstop.cli_common import _platform, data_dir_option


@click.command("upkeep")
@data_dir_option
@click.option(
    "--full",
    is_flag=True,
    help="Also delete files no version knows of (a crashed write's), once older than the retention.",
)
@click.pass_context
def lake_upkeep(ctx: click.Context, data_dir: Path | None, full: bool) -> None:
    """Compact, checkpoint, vacuum and clean the log of every lake table; print the report as JSON.

    Versions a registered model's lineage names stay readable; other history is kept for
    `lake_retention_hours`. When the registry cannot be read, nothing is deleted.
    """
    from pitstop.lake.upkeep import LakeUpkeep, UpkeepPolicy
    from pitstop.registry.pins import pins_of

    with _platform(ctx, data_dir) as p:
        pins = pins_of(d.registry for d in p.deployments.values())
        report = LakeUpkeep(p.lake, pins, UpkeepPolicy.from_settings(p.settings)).run_once(full=full)
    click.echo(json.dumps(report.to_dict(), indent=2))
