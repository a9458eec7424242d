"""Helpers shared by the CLI modules."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pitstop.config import Settings, load_settings
from pitstop.errors import PitstopError


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    obj = ctx.ensure_object(dict)
    return load_settings(obj.get("config"), **overrides)


@contextmanager
def _errors() -> Iterator[None]:
    """Our errors print as one clear line and exit non-zero; no traceback for expected failures."""
    try:
        yield
    except PitstopError as exc:
        click.echo(f"error [{exc.code}]: {exc.message}", err=True)
        sys.exit(2)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory (default ./pitstop-data).",
)
