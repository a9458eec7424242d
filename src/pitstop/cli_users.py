"""``pitstop users``: people, their roles, passwords and API keys.

A password or key is printed once, by the command that makes it, and is stored only as a hash.
Every change is audited (actor ``cli``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pitstop.cli_common import _errors, _settings, data_dir_option
from pitstop.web.permissions import ROLES

if TYPE_CHECKING:
    from pitstop.store import Database
    from pitstop.web.users import Users

_role_choice = click.Choice(list(ROLES))


@contextmanager
def _users(ctx: click.Context, data_dir: Path | None) -> Iterator[tuple[Users, Database]]:
    """The user store over the data dir's ops DB (migrated), without opening the whole platform."""
    from sqlalchemy.exc import SQLAlchemyError

    from pitstop.platform import storage_error
    from pitstop.store import Database
    from pitstop.web.users import Users

    with _errors():
        settings = _settings(ctx, data_dir=data_dir)
        db = Database(settings.ops_db_url)
        try:
            try:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
                db.migrate()
            except (OSError, SQLAlchemyError) as exc:  # read-only, full or damaged: one clear line
                raise storage_error(settings.data_dir, exc) from exc
            yield Users(db), db
        finally:
            db.close()


def _password_from_stdin() -> str:
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise click.UsageError("--password-stdin: no password on standard input")
    return password


@click.group()
def users() -> None:
    """Users of the dashboard and API: viewer, technician, engineer, admin."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=_role_choice, required=True, help="What the user may do (see the README).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@data_dir_option
@click.pass_context
def add(ctx: click.Context, name: str, role: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Create a user. Without --password-stdin a password is generated and printed once."""
    given = _password_from_stdin() if password_stdin else None
    with _users(ctx, data_dir) as (store, db):
        password = store.add(name, role, given)
        db.audit("cli", "user_added", user=name, new_role=role)
    click.echo(f"created {name} ({role})")
    if given is None:
        click.echo("password (shown once):", err=True)
        click.echo(password)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@data_dir_option
@click.pass_context
def list_users(ctx: click.Context, as_json: bool, data_dir: Path | None) -> None:
    """Every user, their role, whether disabled, how many active API keys."""
    with _users(ctx, data_dir) as (store, _):
        rows = store.list()
    for row in rows:
        if as_json:
            click.echo(json.dumps(row))
        else:
            state = "disabled" if row["disabled"] else "active"
            click.echo(f"{row['name']:24} {row['role']:11} {state:9} keys {row['api_keys']}")
    if not rows and not as_json:
        click.echo("no users yet: `pitstop users add NAME --role admin`")


@users.command("disable")
@click.argument("name")
@data_dir_option
@click.pass_context
def disable(ctx: click.Context, name: str, data_dir: Path | None) -> None:
    """Disable a user: their sessions end and their API keys stop working."""
    with _users(ctx, data_dir) as (store, db):
        store.disable(name)
        db.audit("cli", "user_disabled", user=name)
    click.echo(f"disabled {name}")


@users.command("enable")
@click.argument("name")
@data_dir_option
@click.pass_context
def enable(ctx: click.Context, name: str, data_dir: Path | None) -> None:
    """Enable a disabled user again."""
    with _users(ctx, data_dir) as (store, db):
        store.enable(name)
        db.audit("cli", "user_enabled", user=name)
    click.echo(f"enabled {name}")


@users.command("set-role")
@click.argument("name")
@click.argument("role", type=_role_choice, required=False)
@click.option("--role", "role_option", type=_role_choice, help="The new role (or give it after NAME).")
@data_dir_option
@click.pass_context
def set_role(
    ctx: click.Context, name: str, role: str | None, role_option: str | None, data_dir: Path | None
) -> None:
    """Give a user another role; it applies to their next request."""
    new = role or role_option
    if new is None:
        raise click.UsageError("name the role: `pitstop users set-role NAME ROLE`")
    with _users(ctx, data_dir) as (store, db):
        store.set_role(name, new)
        db.audit("cli", "user_role_set", user=name, new_role=new)
    click.echo(f"{name} is now {new}")


@users.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@data_dir_option
@click.pass_context
def reset_password(ctx: click.Context, name: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Set a new password (generated and printed once unless --password-stdin); sessions end."""
    given = _password_from_stdin() if password_stdin else None
    with _users(ctx, data_dir) as (store, db):
        password = store.reset_password(name, given)
        db.audit("cli", "user_password_reset", user=name)
    click.echo(f"new password set for {name}")
    if given is None:
        click.echo("password (shown once):", err=True)
        click.echo(password)


@users.command("api-key")
@click.argument("name")
@click.option("--list", "listing", is_flag=True, help="List the user's keys (prefix, made, revoked).")
@click.option("--revoke", "revoke", metavar="ID|all", help="Revoke one key by id, or all of them.")
@data_dir_option
@click.pass_context
def api_key(ctx: click.Context, name: str, listing: bool, revoke: str | None, data_dir: Path | None) -> None:
    """Make an API key for NAME (printed once, alone on the last line); --list, --revoke ID|all.

    Use it as ``Authorization: Bearer <key>``; it has the user's role."""
    with _users(ctx, data_dir) as (store, db):
        if listing:
            for key in store.keys(name):
                state = f"revoked {key['revoked_at']}" if key["revoked_at"] else "active"
                click.echo(f"{key['id']:>5}  {key['prefix']}…  made {key['created_at']}  {state}")
            return
        if revoke is not None:
            if revoke != "all" and not revoke.isdigit():
                raise click.BadParameter("a key id (see --list) or 'all'", param_hint="--revoke")
            n = store.revoke_key(name, None if revoke == "all" else int(revoke))
            db.audit("cli", "api_key_revoked", user=name, key=revoke, revoked=n)
            click.echo(f"revoked {n} key(s) of {name}")
            return
        new_key = store.create_key(name)
        db.audit("cli", "api_key_created", user=name, prefix=new_key[:12])
    click.echo(f"API key for {name} (shown once; send as 'Authorization: Bearer <key>'):", err=True)
    click.echo(new_key)
