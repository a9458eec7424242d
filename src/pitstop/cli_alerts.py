"""``pitstop alerts``: list alerts, silence and unsilence them (silences are audited)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pitstop.cli_common import _errors, _settings, data_dir_option
from pitstop.monitoring.alert_rules import KINDS

if TYPE_CHECKING:
    from pitstop.store import Database

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d`` (or plain seconds) in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration: use e.g. 90s, 15m, 2h or 7d")
    return float(match[1]) * _UNITS[match[2] or "s"]


@contextmanager
def _ops_db(ctx: click.Context, data_dir: Path | None) -> Iterator[Database]:
    """The data dir's ops DB (migrated), without opening the whole platform."""
    from sqlalchemy.exc import SQLAlchemyError

    from pitstop.platform import storage_error
    from pitstop.store import Database

    with _errors():
        settings = _settings(ctx, data_dir=data_dir)
        db = Database(settings.ops_db_url)
        try:
            try:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
                db.migrate()
            except (OSError, SQLAlchemyError) as exc:
                raise storage_error(settings.data_dir, exc) from exc
            yield db
        finally:
            db.close()


@click.group()
def alerts() -> None:
    """Alerts: drift, data quality, performance, guards, rollbacks, retrains, overdue work orders."""


@alerts.command("list")
@click.option("--all", "everything", is_flag=True, help="Resolved alerts too (default: firing only).")
@click.option("--kind", type=click.Choice(list(KINDS)), default=None, help="Only this kind.")
@click.option("--machine-type", default=None, help="Only this machine type's.")
@click.option("--silences", is_flag=True, help="List the active silences instead.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@data_dir_option
@click.pass_context
def list_cmd(
    ctx: click.Context,
    everything: bool,
    kind: str | None,
    machine_type: str | None,
    silences: bool,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """List firing alerts, newest first (a silenced one is listed too, marked)."""
    from pitstop.monitoring.alerts import list_alerts, list_silences

    with _ops_db(ctx, data_dir) as db:
        if silences:
            found = list_silences(db)
            if as_json:
                click.echo(json.dumps({"silences": found}))
                return
            for x in found:
                match = ", ".join(f"{k}={x[k]}" for k in ("kind", "machine_type", "key_prefix") if x[k])
                click.echo(f"#{x['id']}  {match}  until {x['until']}  by {x['created_by']}: {x['reason']}")
            return
        rows = list_alerts(db, None if everything else "firing", kind, machine_type)
    if as_json:
        click.echo(json.dumps({"alerts": rows, "count": len(rows)}))
        return
    if not rows:
        click.echo("no alerts" if everything else "no firing alerts")
    for a in rows:
        mark = f" (silenced by #{a['silenced_by']})" if a["silenced_by"] else ""
        times = f" x{a['count']}" if a["count"] > 1 else ""
        click.echo(
            f"#{a['id']} {a['status']:8} {a['severity']:8} {a['kind']:18} {a['summary']}{times}{mark}"
            f"  [{a['key']}, last {a['last_at']}]"
        )


@alerts.command("silence")
@click.option("--kind", type=click.Choice(list(KINDS)), default=None, help="Silence this kind.")
@click.option("--machine-type", default=None, help="Silence this machine type's alerts.")
@click.option("--key-prefix", default=None, help="Silence alerts whose key starts with this.")
@click.option("--for", "duration", required=True, metavar="DURATION", help="How long: 90s, 15m, 2h, 7d.")
@click.option("--reason", required=True, help="Why (shown beside the silence and in the audit log).")
@click.option("--by", "actor", default="cli", show_default=True, help="Who silences (for the audit log).")
@data_dir_option
@click.pass_context
def silence_cmd(
    ctx: click.Context,
    kind: str | None,
    machine_type: str | None,
    key_prefix: str | None,
    duration: str,
    reason: str,
    actor: str,
    data_dir: Path | None,
) -> None:
    """Stop sending matching alerts for a while (they are still recorded and listed)."""
    from pitstop.monitoring.alerts import add_silence

    seconds = parse_duration(duration)
    with _ops_db(ctx, data_dir) as db:
        made = add_silence(
            db,
            actor,
            duration_s=seconds,
            reason=reason,
            kind=kind,
            machine_type=machine_type,
            key_prefix=key_prefix,
        )
    click.echo(json.dumps(made))


@alerts.command("unsilence")
@click.argument("silence_id", type=int)
@click.option("--by", "actor", default="cli", show_default=True, help="Who ends it (for the audit log).")
@data_dir_option
@click.pass_context
def unsilence_cmd(ctx: click.Context, silence_id: int, actor: str, data_dir: Path | None) -> None:
    """End a silence now."""
    from pitstop.monitoring.alerts import remove_silence

    with _ops_db(ctx, data_dir) as db:
        remove_silence(db, actor, silence_id)
    click.echo(f"silence #{silence_id} ended")
