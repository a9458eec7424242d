"""``pitstop backup`` and ``pitstop restore``: a data dir copied while it runs, and put back."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pitstop.cli_common import _errors, _settings, data_dir_option


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback ``(phase, done, total)``: a bar per phase on stderr when stdout is a
    terminal (stdout keeps the JSON summary), nothing otherwise."""
    bars: dict[str, Any] = {}

    def close() -> None:
        if "bar" in bars:
            bars.pop("bar").__exit__(None, None, None)

    def update(phase: str, done: int, total: int) -> None:
        if not sys.stdout.isatty():
            return
        if bars.get("phase") != phase:
            close()
            bar = click.progressbar(length=total, label=f"{phase:<10}", show_eta=False, file=sys.stderr)
            bar.__enter__()
            bars.update(bar=bar, phase=phase, done=0)
        bars["bar"].update(done - bars["done"])
        bars["done"] = done

    try:
        yield update
    finally:
        close()


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@data_dir_option
@click.pass_context
def backup(ctx: click.Context, dest: Path, data_dir: Path | None) -> None:
    """Back up the data dir into DEST, a new folder, while the server and processor may run.

    Databases are copied with SQLite's online backup API, each lake table at one version, then
    model artifacts, secrets and state; DEST/backup.json lists every file's sha256. Prints a JSON
    summary.
    """
    from pitstop.backup import backup as run_backup

    with _errors(), _progress() as progress:
        summary = run_backup(_settings(ctx, data_dir=data_dir), dest, progress)
    click.echo(json.dumps(summary))


@click.command()
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@data_dir_option
@click.pass_context
def restore(ctx: click.Context, src: Path, data_dir: Path | None) -> None:
    """Restore the backup in SRC into the data dir, which must be new or empty.

    Every file is checked against SRC/backup.json first (nothing is copied from a damaged
    backup); the model registry is pointed at the new folder. Prints a JSON summary.
    """
    from pitstop.backup import restore as run_restore

    with _errors(), _progress() as progress:
        summary = run_restore(src, _settings(ctx, data_dir=data_dir), progress)
    click.echo(json.dumps(summary))
