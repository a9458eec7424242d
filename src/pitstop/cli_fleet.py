"""``pitstop fleet``: describe machine types in a fleet file, check it, apply it to a deployment."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pitstop.cli_common import _errors, _settings, data_dir_option

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group()
def fleet() -> None:
    """Machine types as data: a TOML fleet file (see the README, "Bring your own fleet")."""


@fleet.command("check")
@click.argument("file", type=_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print the parsed types as one JSON object.")
@click.pass_context
def check(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Validate a fleet file without applying it. Every problem is named by type and field."""
    from pitstop.fleetops import check_policies, manual_files
    from pitstop.schema import load_fleet_file

    with _errors():
        parsed = load_fleet_file(file)
        manual_files(parsed, file.parent)  # every manual it names is there
        check_policies(parsed, _settings(ctx))
        summary = parsed.summary()
        if as_json:
            click.echo(json.dumps({"ok": True, "machine_types": summary}))
            return
        for name, body in summary.items():
            click.echo(
                f"{name}: {len(body['sensors'])} sensors ({len(body['settings'])} settings, "
                f"{len(body['optional'])} optional), {len(body['components'])} components, "
                f"time unit {body['time_unit']}"
            )
        click.echo(f"{file}: ok")


@fleet.command("apply")
@click.argument("file", type=_FILE)
@data_dir_option
@click.pass_context
def apply(ctx: click.Context, file: Path, data_dir: Path | None) -> None:
    """Validate a fleet file, store it as the deployment's next fleet version (audited) and evolve
    the lake: new sensors and types add columns, no row is rewritten or lost. Removing a sensor that
    has data, a type with machines, or changing a used type's time unit is refused."""
    from pitstop.fleetops import apply_to_data_dir, install_manuals, manual_files
    from pitstop.schema import load_fleet_file

    with _errors():
        new = load_fleet_file(file)
        manuals = manual_files(new, file.parent)
        settings = _settings(ctx, data_dir=data_dir)
        result = apply_to_data_dir(settings, new, origin=str(file.resolve()), actor="cli")
        result["manuals"] = install_manuals(manuals, settings.data_dir / "manuals")
        change = result["change"]
        if result["unchanged"]:
            click.echo(f"fleet unchanged (version {result['version']})", err=True)
        else:
            click.echo(
                f"fleet version {result['version']} applied: types {', '.join(sorted(new.machine_types))}"
                + (f"; new types {', '.join(change['added_types'])}" if change["added_types"] else "")
                + (
                    f"; new lake columns {', '.join(result['lake_columns'])}"
                    if result["lake_columns"]
                    else ""
                ),
                err=True,
            )
        click.echo(json.dumps(result))


@fleet.command("show")
@data_dir_option
@click.option("--toml", "as_toml", is_flag=True, help="Print the fleet file in force, as applied.")
@click.option("--history", is_flag=True, help="List every applied version.")
@click.pass_context
def show(ctx: click.Context, data_dir: Path | None, as_toml: bool, history: bool) -> None:
    """The fleet in force in the data dir: its version and machine types (JSON)."""
    from pitstop.fleetops import fleet_history, stored_fleet
    from pitstop.platform import Platform

    with _errors():
        platform = Platform.open(_settings(ctx, data_dir=data_dir))
        try:
            stored = stored_fleet(platform.db)
            versions = fleet_history(platform.db) if history else None
        finally:
            platform.close()
        current = platform.fleet
        if as_toml:
            click.echo(current.source, nl=False)
            return
        out: dict[str, object] = {
            "version": stored[1] if stored is not None else None,
            "source": "applied" if stored is not None else "shipped default (turbofan)",
            "machine_types": current.summary(),
        }
        if versions is not None:
            out["history"] = versions
        click.echo(json.dumps(out, indent=2))
