"""``pitstop backtest``: what the maintenance policy would have done on past data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pitstop.cli_common import _errors, _platform, _progress_bar, _settings, data_dir_option
from pitstop.cli_models import _FILE, _machine_type_option
from pitstop.errors import ValidationError


@click.command()
@data_dir_option
@click.option(
    "--cmapss",
    "cmapss_path",
    type=_FILE,
    default=None,
    help="Backtest a C-MAPSS training file (run to failure) instead of the lake.",
)
@click.option("--lake-version", type=int, default=None, help="Telemetry version to replay (default: newest).")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Grouped folds.")
@click.option("--seed", type=int, default=None, help="Seed for folds and training (default: train_seed).")
@click.option("--search", is_flag=True, help="Search the threshold that minimises cost (else: the setting).")
@click.option("--lead-time", type=float, default=None, help="Workshop lead time (default: lead_time).")
@click.option("--threshold", type=float, default=None, help="Trigger (default: work_order_rul_threshold).")
@click.option(
    "--cost-failure", type=float, default=None, help="Unplanned failure cost (default: cost_failure)."
)
@click.option("--cost-repair", type=float, default=None, help="Planned repair cost (default: cost_repair).")
@click.option(
    "--cost-inspection", type=float, default=None, help="No-fault inspection cost (default: cost_inspection)."
)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object (the report).")
@_machine_type_option
@click.pass_context
def backtest(
    ctx: click.Context,
    data_dir: Path | None,
    cmapss_path: Path | None,
    lake_version: int | None,
    folds: int,
    seed: int | None,
    search: bool,
    lead_time: float | None,
    threshold: float | None,
    cost_failure: float | None,
    cost_repair: float | None,
    cost_inspection: float | None,
    as_json: bool,
    machine_type: str | None,
) -> None:
    """Replay past data through the maintenance policy: failures caught in time, median lead,
    missed failures, false alarms per 1,000 readings and total cost, beside run-to-failure and
    the best fixed-interval schedule. Every machine is scored by a model trained without it
    (grouped folds), reading by reading, and the policy learns of a failure only when it happens.

    With --json the last line is one JSON object: caught_fraction, median_lead,
    false_alarms_per_1000, cost, run_to_failure_cost, best_fixed_interval_cost (and more).
    """
    from dataclasses import replace

    from pitstop.maintenance import RiskPolicy
    from pitstop.training.backtest import Costs
    from pitstop.training.backtest import backtest as run

    settings = _settings(ctx, data_dir=data_dir)
    with _errors():
        data = _backtest_data(ctx, data_dir, cmapss_path, lake_version, machine_type)
        policy = data["policy"] or RiskPolicy.from_settings(settings)
        policy = replace(
            policy,
            lead_time=policy.lead_time if lead_time is None else lead_time,
            threshold=policy.threshold if threshold is None else threshold,
        )
        costs = Costs(
            settings.cost_failure if cost_failure is None else cost_failure,
            settings.cost_repair if cost_repair is None else cost_repair,
            settings.cost_inspection if cost_inspection is None else cost_inspection,
        )
        update, close = _progress_bar("backtest")
        try:
            report = run(
                data["telemetry"],
                data["events"],
                data["spec"],
                policy,
                costs,
                horizon=data["horizon"],
                folds=folds,
                seed=settings.train_seed if seed is None else seed,
                search=search,
                train_options={
                    "folds": settings.train_folds,
                    "coverage": settings.interval_coverage,
                    **data["train_options"],
                },
                progress=update,
                unit_seconds=data["unit_seconds"],
            )
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_data") from exc
        finally:
            close()
        report["source"] = data["source"]
        click.echo(_backtest_table(report))
        if as_json:
            click.echo(json.dumps(report))


def _backtest_data(
    ctx: click.Context,
    data_dir: Path | None,
    cmapss_path: Path | None,
    lake_version: int | None,
    machine_type: str | None,
) -> dict[str, Any]:
    """What to backtest: telemetry, events, feature spec and a label, from a C-MAPSS file or a
    machine type's machines in a lake version (with the type's cap, horizons, unit and policy)."""
    settings = _settings(ctx, data_dir=data_dir)
    defaults = {
        "train_options": {
            "rul_cap": settings.rul_cap,
            "interval_horizon": settings.interval_horizon,
            "failure_horizon": settings.failure_horizon,
        },
        "horizon": settings.failure_horizon,
        "policy": None,
        "unit_seconds": None,
    }
    if cmapss_path is not None:
        from pitstop.sim.cmapss import read_cmapss
        from pitstop.training.cmapss import failures, spec_for, telemetry

        try:
            raw = read_cmapss(cmapss_path)
        except (ValueError, OSError) as exc:
            raise ValidationError(f"{cmapss_path} is not a C-MAPSS file: {exc}", code="invalid_data") from exc
        rows = telemetry(raw, "train-")
        return defaults | {
            "telemetry": rows,
            "events": failures(rows),
            "spec": spec_for(raw),
            "source": f"cmapss:{cmapss_path.name}",
        }
    import polars as pl

    from pitstop.training.pipeline import machines_of_type, type_spec, type_targets

    with _platform(ctx, data_dir) as platform:
        mt = platform.fleet.type_of(
            platform.deployment_for(machine_type or platform.default_type).machine_type
        )
        version = platform.lake.version("telemetry") if lake_version is None else lake_version
        members = machines_of_type(platform, mt.name)
        rows = platform.lake.read(
            "telemetry",
            version=version,
            columns=["machine_id", "ts", "seq", "bus_position", *mt.sensor_names],
            machine_ids=members,
        )
        events = platform.lake.read("events", machine_ids=members)
        if rows.height == 0:
            raise ValidationError(f"no readings of machine type {mt.name} in the lake", code="invalid_data")
        try:
            targets = type_targets(mt, settings, rows, events)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_data") from exc
        return {
            "telemetry": rows,
            "events": events.filter(pl.col("machine_id").is_in(rows["machine_id"].unique().to_list())),
            "spec": type_spec(mt, rows, settings.train_seed),
            "source": f"lake:telemetry@v{version} ({mt.name})",
            "train_options": {
                "rul_cap": targets.rul_cap,
                "interval_horizon": targets.interval_horizon,
                "failure_horizon": targets.failure_horizon,
                "optional": frozenset(set(mt.sensor_names) - mt.required),
            },
            "horizon": targets.failure_horizon,
            "policy": platform.policy_for(mt.name),
            "unit_seconds": targets.unit_seconds,
        }


def _backtest_table(report: dict[str, Any]) -> str:
    lead = report["lead_time"]
    lines = [
        f"backtest of {report['source']}: {report['machines']} machines, {report['failures']} failures, "
        f"lead time {lead:g}, horizon {report['horizon']:g}, costs {report['costs']}",
        f"{'strategy':<28}{'caught':>10}{'median lead':>13}{'missed':>8}{'false alarms/1k':>17}{'cost':>10}",
    ]
    for o in report["strategies"]:
        if o["strategy"] == "policy":
            name = f"policy (threshold {o['threshold']:g})"
        elif o["strategy"] == "fixed_interval":
            name = f"fixed interval (every {o['interval']})"
        else:
            name = "run to failure"
        median = "" if o["median_lead"] is None else f"{o['median_lead']:g}"
        lines.append(
            f"{name:<28}{o['caught_fraction']:>10.1%}{median:>13}{o['missed']:>8}"
            f"{o['false_alarms_per_1000']:>17.2f}{o['cost']:>10.1f}"
        )
    return "\n".join(lines)
