"""Operator commands: devices, quarantine, lake."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from pitstop.cli_common import _platform, data_dir_option
from pitstop.lake import TABLES


@click.group()
def devices() -> None:
    """Device tokens: one per device, stored hashed, shown once."""


@devices.command("add")
@data_dir_option
@click.argument("machine_id")
@click.option("--machine-type", default=None, help="Create the machine with this type if it is new.")
@click.pass_context
def devices_add(ctx: click.Context, data_dir: Path | None, machine_id: str, machine_type: str | None) -> None:
    """Register a device for MACHINE_ID and print its token (the only time it is shown)."""
    from pitstop.ingest import DeviceRegistry

    with _platform(ctx, data_dir) as p:
        device_id, token = DeviceRegistry(p.db).add(machine_id, machine_type, p.fleet)
        p.db.audit("cli", "device_added", device_id=device_id, machine_id=machine_id)
    click.echo(json.dumps({"device_id": device_id, "machine_id": machine_id, "token": token}))


@devices.command("list")
@data_dir_option
@click.pass_context
def devices_list(ctx: click.Context, data_dir: Path | None) -> None:
    """List devices and their status."""
    from pitstop.ingest import DeviceRegistry

    with _platform(ctx, data_dir) as p:
        rows = DeviceRegistry(p.db).list()
    for d in rows:
        click.echo(f"{d['device_id']:>6}  {d['machine_id']:24} {d['status']:9} created {d['created_at']}")
    if not rows:
        click.echo("no devices; add one with `pitstop devices add MACHINE_ID --machine-type TYPE`")


@devices.command("disable")
@data_dir_option
@click.argument("device_id", type=int)
@click.pass_context
def devices_disable(ctx: click.Context, data_dir: Path | None, device_id: int) -> None:
    """Disable a device: its token stops working (within 5 s on a running server)."""
    from pitstop.ingest import DeviceRegistry

    with _platform(ctx, data_dir) as p:
        DeviceRegistry(p.db).disable(device_id)
        p.db.audit("cli", "device_disabled", device_id=device_id)
    click.echo(f"device {device_id} disabled")


@devices.command("rotate")
@data_dir_option
@click.argument("device_id", type=int)
@click.pass_context
def devices_rotate(ctx: click.Context, data_dir: Path | None, device_id: int) -> None:
    """Issue a new token for a device; the old token stops working."""
    from pitstop.ingest import DeviceRegistry

    with _platform(ctx, data_dir) as p:
        token = DeviceRegistry(p.db).rotate(device_id)
        p.db.audit("cli", "device_rotated", device_id=device_id)
    click.echo(json.dumps({"device_id": device_id, "token": token}))


@click.group()
def quarantine() -> None:
    """Readings accepted but held out of the clean lake (e.g. values out of range)."""


@quarantine.command("list")
@data_dir_option
@click.option("--machine", default=None, help="Only this machine.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def quarantine_list(ctx: click.Context, data_dir: Path | None, machine: str | None, limit: int) -> None:
    """Show quarantined readings, newest first, with the reason."""
    from pitstop.lake import list_quarantine

    with _platform(ctx, data_dir) as p:
        frame = list_quarantine(p.lake, machine, limit)
    for machine_id, ts, seq, reason in frame.select("machine_id", "ts", "seq", "reason").iter_rows():
        click.echo(f"{machine_id:16} seq {seq:>8}  {ts.isoformat()}  {reason}")
    if frame.height == 0:
        click.echo("quarantine is empty")


@quarantine.command("release")
@data_dir_option
@click.option("--machine", default=None, help="Only this machine.")
@click.option("--seq", "seqs", type=int, multiple=True, help="Only these seqs (with --machine).")
@click.option("--all", "everything", is_flag=True, help="Release every quarantined reading.")
@click.pass_context
def quarantine_release(
    ctx: click.Context, data_dir: Path | None, machine: str | None, seqs: tuple[int, ...], everything: bool
) -> None:
    """Move confirmed readings from quarantine into the telemetry table."""
    if not (machine or everything):
        raise click.UsageError("name --machine (optionally with --seq), or pass --all")
    if seqs and not machine:
        raise click.UsageError("--seq needs --machine")
    from pitstop.lake import release

    with _platform(ctx, data_dir) as p:
        n = release(p.lake, machine, list(seqs) or None)
        p.db.audit("cli", "quarantine_released", machine_id=machine, seqs=list(seqs), readings=n)
    click.echo(f"released {n} readings into telemetry")


@click.group()
def lake() -> None:
    """Lake tables: versions, compaction, vacuum."""


table_argument = click.argument("table", type=click.Choice(TABLES), default="telemetry")


@lake.command("versions")
@data_dir_option
@table_argument
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
def lake_versions(ctx: click.Context, data_dir: Path | None, table: str, limit: int) -> None:
    """A table's commits, newest first (use a version with `pitstop train --lake-version`)."""
    with _platform(ctx, data_dir) as p:
        rows = p.lake.history(table, limit)
        count = p.lake.count(table)
    click.echo(f"{table}: {count:,} rows now")
    for r in rows:
        click.echo(
            f"  v{r['version']:<6} {r['timestamp']}  {r['operation']:<10} +{r['rows_added'] or 0} rows"
        )


@lake.command("compact")
@data_dir_option
@table_argument
@click.pass_context
def lake_compact(ctx: click.Context, data_dir: Path | None, table: str) -> None:
    """Merge small files into large ones (keeps every version readable)."""
    with _platform(ctx, data_dir) as p:
        click.echo(json.dumps({"table": table, **p.lake.compact(table)}))


@lake.command("vacuum")
@data_dir_option
@table_argument
@click.option("--retention-hours", type=int, default=168, show_default=True)
@click.option("--yes", is_flag=True, help="Delete the files (default: only list them).")
@click.pass_context
def lake_vacuum(
    ctx: click.Context, data_dir: Path | None, table: str, retention_hours: int, yes: bool
) -> None:
    """Delete files that no version within the retention uses, except the versions registered
    models were trained on (their lineage); other older versions stop being readable. Refused
    when the registry cannot be read (an unknown pin must not be deleted)."""
    from pitstop.registry.pins import lake_pins

    with _platform(ctx, data_dir) as p:
        pinned = lake_pins(d.registry for d in p.deployments.values()).get(table, set())
        files = p.lake.vacuum(table, retention_hours, dry_run=not yes, keep_versions=sorted(pinned))
    verb = "deleted" if yes else "would delete (pass --yes)"
    click.echo(f"{verb} {len(files)} files")


@lake.command("read")
@data_dir_option
@table_argument
@click.option("--version", type=int, default=None, help="Table version.")
@click.option("--as-of", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]), default=None)
@click.option("--machine", default=None)
@click.pass_context
def lake_read(
    ctx: click.Context,
    data_dir: Path | None,
    table: str,
    version: int | None,
    as_of: datetime | None,
    machine: str | None,
) -> None:
    """Row count (and the first rows) of a table now, at a version, or at a time."""
    with _platform(ctx, data_dir) as p:
        frame = p.lake.read(table, version=version, as_of=as_of, machine_ids=[machine] if machine else None)
    click.echo(f"{frame.height:,} rows")
    click.echo(str(frame.head(5)))
