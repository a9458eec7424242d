"""``pitstop evaluate`` and ``pitstop benchmark``: how good a model is, on data it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pitstop.cli_common import _errors, _platform, _progress_bar, _settings, data_dir_option, tune_option
from pitstop.errors import ValidationError

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@data_dir_option
@click.option("--alias", default="champion", show_default=True, help="Registered model alias to evaluate.")
@click.option(
    "--test", "test_path", type=_FILE, required=True, help="Held-out readings, C-MAPSS test format."
)
@click.option(
    "--rul", "rul_path", type=_FILE, required=True, help="True RUL after each test engine's last cycle."
)
@click.pass_context
def evaluate(ctx: click.Context, data_dir: Path | None, alias: str, test_path: Path, rul_path: Path) -> None:
    """Score a registered model at the last reading of each held-out machine.

    Prints one JSON object: rmse, phm08_score, mae, interval_coverage, interval_width, engines,
    and the model version.
    """
    from pitstop.training.cmapss import evaluate as score
    from pitstop.training.cmapss import read_test

    with _platform(ctx, data_dir) as platform:
        try:
            test, truth = read_test(test_path, rul_path)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_data") from exc
        model = platform.registry.load(alias)
        missing = [s for s in model.bundle.spec.inputs if s not in test.columns]
        if missing:
            raise ValidationError(
                f"{test_path} lacks columns the model needs: {missing}", code="invalid_data"
            )
        result = score(model.bundle, test, truth)
        click.echo(json.dumps({"model": model.name, "version": model.version, "alias": alias, **result}))


@click.group()
def benchmark() -> None:
    """Public benchmarks, trained and scored from scratch."""


@benchmark.command("cmapss")
@click.option(
    "--train", "train_path", type=_FILE, required=True, help="C-MAPSS training file (run to failure)."
)
@click.option("--test", "test_path", type=_FILE, required=True, help="C-MAPSS test file (cut short).")
@click.option("--rul", "rul_path", type=_FILE, required=True, help="C-MAPSS RUL file for the test engines.")
@click.option("--seed", type=int, default=42, show_default=True)
@tune_option
@click.option(
    "--rul-cap", type=float, default=None, help="Cap on the training target (default: the setting, 125)."
)
@click.pass_context
def benchmark_cmapss(
    ctx: click.Context,
    train_path: Path,
    test_path: Path,
    rul_path: Path,
    seed: int,
    tune_trials: int,
    rul_cap: float | None,
) -> None:
    """Train on a C-MAPSS training file and score the last cycle of each test engine against its
    true (uncapped) RUL. Works on any subset in the C-MAPSS format.

    The last line is one JSON object: rmse, phm08_score, interval_coverage, train_seconds (and more).
    """
    from pitstop.training.cmapss import benchmark as run

    settings = _settings(ctx)
    with _errors():
        update, close = _progress_bar("training")
        try:
            result = run(
                train_path,
                test_path,
                rul_path,
                seed=seed,
                rul_cap=rul_cap or settings.rul_cap,
                coverage=settings.interval_coverage,
                folds=settings.train_folds,
                tune_trials=tune_trials,
                interval_horizon=settings.interval_horizon,
                progress=update,
            )
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_data") from exc
        finally:
            close()
        click.echo(
            f"{result['engines']} test engines: RMSE {result['rmse']:.2f}, PHM08 score "
            f"{result['phm08_score']:.0f}, {settings.interval_coverage:.0%} interval covers "
            f"{result['interval_coverage']:.0%}; trained in {result['train_seconds']:.1f} s",
            err=True,
        )
        click.echo(json.dumps(result))


@click.command()
@data_dir_option
@click.option("--version", default=None, help="Version to promote (default: the 'challenger' alias).")
@click.pass_context
def promote(ctx: click.Context, data_dir: Path | None, version: str | None) -> None:
    """Make a version the champion (its artifacts verified first). Running processors switch to
    it between two micro-batches, within ``serving_poll_s``."""
    from pitstop.serving.deploy import promote as run

    with _platform(ctx, data_dir) as platform:
        click.echo(json.dumps(run(platform, version)))


@click.command()
@data_dir_option
@click.pass_context
def rollback(ctx: click.Context, data_dir: Path | None) -> None:
    """Make the champion before the last promotion the champion again."""
    from pitstop.serving.deploy import rollback as run

    with _platform(ctx, data_dir) as platform:
        click.echo(json.dumps(run(platform)))


@click.command()
@data_dir_option
@click.option("--lake-version", type=int, default=None, help="Telemetry table version (default newest).")
@click.option("--alias", default="champion", show_default=True, help="Registered model alias to score with.")
@click.option("--latest", is_flag=True, help="Only each machine's latest reading (default: every reading).")
@click.pass_context
def score(
    ctx: click.Context, data_dir: Path | None, lake_version: int | None, alias: str, latest: bool
) -> None:
    """Score a lake version in batch into the lake's ``predictions`` table (each row records the
    model name, version, arm and lake version). Running it again for the same version and model
    writes nothing."""
    from pitstop.serving.batch import score_lake

    with _platform(ctx, data_dir) as platform:
        update, close = _progress_bar("scoring")
        try:
            result = score_lake(
                platform, lake_version=lake_version, alias=alias, latest=latest, progress=update
            )
        finally:
            close()
        click.echo(json.dumps(result))
