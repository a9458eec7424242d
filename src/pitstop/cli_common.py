"""Helpers shared by the CLI modules."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pitstop.config import Settings, load_settings
from pitstop.errors import PitstopError

if TYPE_CHECKING:
    from pitstop.platform import Platform


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


@contextmanager
def _platform(ctx: click.Context, data_dir: Path | None) -> Iterator[Platform]:
    """The platform over the data dir, closed after; our errors print as one line."""
    from pitstop.platform import Platform

    with _errors():
        platform = Platform.open(_settings(ctx, data_dir=data_dir))
        try:
            yield platform
        finally:
            platform.close()


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory (default ./pitstop-data).",
)

tune_option = click.option(
    "--tune",
    "tune_trials",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Search LightGBM parameters with Optuna first: N trials, each a grouped cross-validation.",
)


def _progress_bar(
    label: str, err: bool = False
) -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    """A progress callback ``(stage, done, total)`` drawing a bar (on stderr with ``err``, so that
    stdout keeps a command's JSON); a new phase (another total) starts a new bar."""
    state: dict[str, Any] = {}

    def close() -> None:
        if "bar" in state:
            state.pop("bar").__exit__(None, None, None)

    def update(stage: str, done: int, total: int) -> None:
        if state.get("total") != total:
            close()
        bar = state.get("bar")
        if bar is None:
            bar = click.progressbar(
                length=total,
                label=label,
                show_eta=False,
                item_show_func=lambda s: s,
                file=sys.stderr if err else None,
            )
            bar.__enter__()
            state.update(bar=bar, done=0, total=total)
        bar.update(done - state["done"], stage)
        state["done"] = done

    return update, close
