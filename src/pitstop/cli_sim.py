"""``pitstop simulate``: data to try Pitstop on without a fleet of your own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from pitstop.cli_common import _errors


@click.group()
def simulate() -> None:
    """Write a simulated fleet's history as the files a real one would bring (no server needed)."""


@simulate.command("harvesters")
@click.option(
    "--machines", type=click.IntRange(min=1), default=8, show_default=True, help="Harvesters with history."
)
@click.option(
    "--days", type=click.FloatRange(min=1), default=200.0, show_default=True, help="Days of history."
)
@click.option(
    "--holdout",
    type=click.IntRange(min=0),
    default=6,
    show_default=True,
    help="Other harvesters, cut short, to evaluate on.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write to."
)
def harvesters(machines: int, days: float, holdout: int, seed: int, out: Path) -> None:
    """Orange harvesters (``pitstop.sim.harvester``): ``harvesters.toml`` (the fleet file),
    ``readings.csv`` and ``events.csv`` (history with failures naming their component, repairs and
    inspections), and for ``--holdout`` other machines ``holdout-readings.csv`` (each cut at a
    random point before its first failure) with ``holdout-truth.csv`` (machine_id,rul,component;
    hours). The last line is one JSON object naming the files."""
    import polars as pl

    from pitstop.schema.fleetfile import shipped_fleet_path
    from pitstop.sim.harvester import simulate as run
    from pitstop.sim.harvester import write_history
    from pitstop.sim.holdout import cut_before_failure

    with _errors():
        out.mkdir(parents=True, exist_ok=True)
        history = run(machines, days, seed=seed, prefix="H-")
        readings, events = write_history(history, out)
        fleet = out / "harvesters.toml"
        shutil.copyfile(shipped_fleet_path("harvesters"), fleet)
        files = {"fleet": str(fleet), "readings": str(readings), "events": str(events)}
        if holdout:
            other = run(holdout, 2 * days, seed=seed + 1000, prefix="T-")  # long enough to fail
            try:
                cut, truth = cut_before_failure(other.readings, other.events, seed=seed)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            cut_path, truth_path = out / "holdout-readings.csv", out / "holdout-truth.csv"
            iso = pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            cut.with_columns(iso).write_csv(cut_path, null_value="")
            truth.write_csv(truth_path)
            files |= {"holdout_readings": str(cut_path), "holdout_truth": str(truth_path)}
        click.echo(
            f"{history.readings.height:,} readings and {history.events.height} events "
            f"of {machines} harvesters in {out}",
            err=True,
        )
        click.echo(
            json.dumps({"readings": history.readings.height, "events": history.events.height, **files})
        )
