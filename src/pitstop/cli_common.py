"""Helpers shared by the CLI modules."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pitstop.config import Settings, load_settings
from pitstop.errors import PitstopError, ServerMissingError

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


# The top-level modules the platform imports from the `server` extra (and fastapi's starlette): one
# of them missing means the install is an agent's (tests/test_packaging.py holds this list to the code)
SERVER_MODULES = frozenset(
    {
        "alembic",
        "argon2",
        "bm25s",
        "deltalake",
        "fastapi",
        "lightgbm",
        "mlflow",
        "numba",
        "optuna",
        "orjson",
        "polars",
        "prometheus_client",
        "pyarrow",
        "pypdf",
        "scipy",
        "snowballstemmer",
        "sqlalchemy",
        "starlette",
        "uvicorn",
        "yaml",  # pyyaml: the assistant's evaluation cases
    }
)


def server_missing(exc: ModuleNotFoundError, command: str) -> ServerMissingError | None:
    """The error for a command that failed on a missing server module; None for any other module."""
    module = (exc.name or "").partition(".")[0]
    if module not in SERVER_MODULES:
        return None
    return ServerMissingError(
        f"{command} needs the server parts: pip install 'pitstop[server]' (missing module {module})"
    )


class PitstopGroup(click.Group):
    """The ``pitstop`` group. Commands import the platform's parts when they run, so every command
    starts in an agent-only install; one that needs the platform there ends with one line naming
    the extra (``server_missing``), not a traceback. Caught here once, not in every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            error = server_missing(exc, f"pitstop {ctx.invoked_subcommand or ''}".strip())
            if error is None:
                raise
            with _errors():
                raise error from exc


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
