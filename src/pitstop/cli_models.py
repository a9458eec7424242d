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
    "--machine-type", default=None, help="Whose model to evaluate (default: the fleet's first type)."
)
@click.option(
    "--readings",
    "readings_path",
    type=_FILE,
    default=None,
    help="Held-out machines' readings (CSV or Parquet: machine_id, ts, one column per sensor).",
)
@click.option(
    "--truth",
    "truth_path",
    type=_FILE,
    default=None,
    help="True RUL after each machine's last reading: CSV machine_id,rul[,component], type's time unit.",
)
@click.option("--test", "test_path", type=_FILE, default=None, help="Held-out readings, C-MAPSS test format.")
@click.option(
    "--rul",
    "rul_path",
    type=_FILE,
    default=None,
    help="True RUL after each test engine's last cycle (C-MAPSS).",
)
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line (no summary on stderr).")
@click.pass_context
def evaluate(
    ctx: click.Context,
    data_dir: Path | None,
    alias: str,
    machine_type: str | None,
    readings_path: Path | None,
    truth_path: Path | None,
    test_path: Path | None,
    rul_path: Path | None,
    as_json: bool,
) -> None:
    """Score a registered model at the last reading of each held-out machine, from raw readings
    that are not stored anywhere (``--readings`` and ``--truth``, or C-MAPSS ``--test``/``--rul``).

    The last line is one JSON object: rmse, mae, interval_coverage, n, naive_rmse (a constant
    prediction, the mean training label), component_accuracy when the truth names components, and
    the model version (C-MAPSS: also phm08_score).
    """
    import polars as pl

    from pitstop.training.evaluate import evaluate_readings, naive_prediction, read_frame

    if (readings_path is None) != (truth_path is None) or (test_path is None) != (rul_path is None):
        raise click.UsageError("give --readings with --truth, or --test with --rul")
    if (readings_path is None) == (test_path is None):
        raise click.UsageError("give --readings and --truth (or C-MAPSS --test and --rul)")
    with _platform(ctx, data_dir) as platform:
        registry = platform.registry_for(machine_type) if machine_type else platform.registry
        if readings_path is not None and truth_path is not None:
            model = registry.load(alias)
            try:
                readings, truth = read_frame(readings_path), read_frame(truth_path)
                result = evaluate_readings(model.bundle, readings, truth, naive_prediction(model.bundle))
            except (ValueError, pl.exceptions.PolarsError) as exc:
                raise ValidationError(str(exc), code="invalid_data") from exc
            if not as_json:
                click.echo(
                    f"{result['n']} machines: RMSE {result['rmse']:.2f} (naive "
                    f"{result.get('naive_rmse', float('nan')):.2f}), interval covers "
                    f"{result['interval_coverage']:.0%}",
                    err=True,
                )
            click.echo(json.dumps({"model": model.name, "version": model.version, "alias": alias, **result}))
            return
        from pitstop.training.cmapss import evaluate as score
        from pitstop.training.cmapss import read_test

        assert test_path is not None and rul_path is not None
        try:
            test, truth = read_test(test_path, rul_path)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_data") from exc
        model = registry.load(alias)
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


_machine_type_option = click.option(
    "--machine-type", default=None, help="Whose model (default: the fleet's first machine type)."
)


@click.command()
@data_dir_option
@click.option("--version", default=None, help="Version to promote (default: the 'challenger' alias).")
@click.option(
    "--force",
    is_flag=True,
    help="Promote a retrain candidate that has not passed its gate and shadow (audited as forced).",
)
@_machine_type_option
@click.pass_context
def promote(
    ctx: click.Context, data_dir: Path | None, version: str | None, force: bool, machine_type: str | None
) -> None:
    """Make a version of a machine type's model the champion (its artifacts verified first).
    Running processors switch to it between two micro-batches, within ``serving_poll_s``. A
    retrain candidate that has not passed its shadow is refused without ``--force``."""
    from pitstop.serving.deploy import promote as run

    with _platform(ctx, data_dir) as platform:
        registry = platform.registry_for(machine_type) if machine_type else platform.registry
        db = platform.db
        click.echo(json.dumps(run(registry, db.audit, version, audited=db.audited_move, force=force)))


@click.command()
@data_dir_option
@_machine_type_option
@click.pass_context
def rollback(ctx: click.Context, data_dir: Path | None, machine_type: str | None) -> None:
    """Make a machine type's champion before its last promotion the champion again."""
    from pitstop.serving.deploy import rollback as run

    with _platform(ctx, data_dir) as platform:
        registry = platform.registry_for(machine_type) if machine_type else platform.registry
        db = platform.db
        click.echo(json.dumps(run(registry, db.audit, audited=db.audited_move)))


@click.command()
@data_dir_option
@click.option("--lake-version", type=int, default=None, help="Telemetry table version (default newest).")
@click.option("--alias", default="champion", show_default=True, help="Registered model alias to score with.")
@click.option("--latest", is_flag=True, help="Only each machine's latest reading (default: every reading).")
@_machine_type_option
@click.pass_context
def score(
    ctx: click.Context,
    data_dir: Path | None,
    lake_version: int | None,
    alias: str,
    latest: bool,
    machine_type: str | None,
) -> None:
    """Score a machine type's machines in a lake version in batch into the lake's ``predictions``
    table, with that type's model (each row records the model name, version, arm and lake
    version). Running it again for the same version and model writes nothing."""
    from pitstop.serving.batch import score_lake

    with _platform(ctx, data_dir) as platform:
        update, close = _progress_bar("scoring")
        try:
            result = score_lake(
                platform,
                lake_version=lake_version,
                alias=alias,
                latest=latest,
                progress=update,
                machine_type=machine_type,
            )
        finally:
            close()
        click.echo(json.dumps(result))


@click.command()
@data_dir_option
@click.option(
    "--shadow-readings", type=click.IntRange(min=0), default=None, help="Default: retrain_shadow_readings."
)
@click.option(
    "--shadow-timeout", type=float, default=None, help="Seconds (default: retrain_shadow_timeout_s)."
)
@_machine_type_option
@click.pass_context
def retrain(
    ctx: click.Context,
    data_dir: Path | None,
    shadow_readings: int | None,
    shadow_timeout: float | None,
    machine_type: str | None,
) -> None:
    """Retrain now: train on the newest lake version, gate against the champion on held-out
    machines and a backtest, shadow on live readings, then promote or reject with the reason.
    Every step is audited (`pitstop audit`). The last line is one JSON object; the exit code is
    0 when promoted, 3 when rejected."""
    from pitstop.monitoring.retrain import retrain as run

    with _platform(ctx, data_dir) as platform:
        result = run(
            platform,
            trigger="manual",
            shadow_readings=shadow_readings,
            shadow_timeout_s=shadow_timeout,
            machine_type=machine_type,
        )
        version = f" (version {result.version})" if result.version else ""
        click.echo(f"{result.outcome}: {result.reason}{version}", err=True)
        click.echo(json.dumps(result.to_dict(), default=str))
    if result.outcome != "promoted":
        ctx.exit(3)


@click.command()
@data_dir_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--action", default=None, help="Only this action (e.g. retrain_rejected, drift_alert).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def audit(ctx: click.Context, data_dir: Path | None, limit: int, action: str | None, as_json: bool) -> None:
    """The audit log, newest first: promotions, rollbacks, retrains, drift alerts, work orders."""
    with _platform(ctx, data_dir) as platform:
        entries = platform.db.audit_entries(limit=limit, action=action)
    for e in entries:
        if as_json:
            click.echo(json.dumps(e, default=str))
        else:
            detail = json.dumps(e["detail"], default=str)
            click.echo(f"{e['ts']}  {e['actor']:<10} {e['action']:<22} {detail}")
