"""A fleet Pitstop has never seen, through the commands alone: its own sensors and names, hours,
irregular sampling with downtime, operating regimes, two failure modes on two components, an
optional sensor with gaps, machines with a second life after a repair. Its model must beat a plain
LightGBM on rolling means, on the same labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.sim.holdout import cut_before_failure
from pitstop.training import rul_labels
from tests import pumpfleet

pytestmark = pytest.mark.slow


def run(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, f"{args}: {result.output[-3000:]}"
    return json.loads(result.output.strip().splitlines()[-1])


def rolling_means(frame: pl.DataFrame, window: int = 10) -> pl.DataFrame:
    """The baseline's features: each sensor's mean over the machine's last ``window`` readings."""
    return frame.sort("machine_id", "ts").with_columns(
        pl.col(s)
        .cast(pl.Float64)
        .forward_fill()
        .over("machine_id")
        .rolling_mean(window, min_samples=1)
        .over("machine_id")
        for s in pumpfleet.SENSORS
    )


def test_an_unseen_fleet_goes_through_the_commands_and_beats_a_plain_baseline(tmp_path: Path) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    history = pumpfleet.simulate(30, 3000, seed=11)
    assert history.events.filter(pl.col("kind") == "failure").group_by("machine_id").len()["len"].max() >= 2
    readings, events = pumpfleet.write(tmp_path / "history", history)
    other = pumpfleet.simulate(25, 2500, seed=12, prefix="H")
    held_out, truth = cut_before_failure(other.readings, other.events, seed=3)
    held_out.write_csv(tmp_path / "holdout.csv")
    truth.write_csv(tmp_path / "truth.csv")
    fleet = tmp_path / "pumps.toml"
    fleet.write_text(pumpfleet.FLEET_TOML)
    data = str(tmp_path / "data")

    run("fleet", "check", str(fleet), "--json")
    run("fleet", "apply", str(fleet), "--data-dir", data)
    imported = run("import", "readings", str(readings), "--data-dir", data, "--machine-type", "pump")
    assert (
        imported["rejected"] == 0 and imported["stored"] == history.readings.height - imported["quarantined"]
    )
    run("import", "events", str(events), "--data-dir", data)
    trained = run("train", "--data-dir", data)  # every type: here, the pump
    assert trained["machine_type"] == "pump" and trained["model"] == "pitstop-rul-pump"
    ours = run(
        "evaluate",
        "--data-dir",
        data,
        "--machine-type",
        "pump",
        "--readings",
        str(tmp_path / "holdout.csv"),
        "--truth",
        str(tmp_path / "truth.csv"),
        "--json",
    )
    assert ours["n"] == truth.height
    cap = float(trained["rul_cap"])  # type: ignore[arg-type]

    # the baseline: LightGBM's defaults on 10-reading rolling means of every raw column, trained on
    # the same labels (hours to failure, capped the same) from the same history
    train = rolling_means(history.readings).with_columns(
        pl.int_range(1, pl.len() + 1).over("machine_id").alias("seq")
    )
    labelled = rul_labels(train, history.events, cap, 0.24 * cap, unit_seconds=3600.0)
    model = lgb.train(
        {"objective": "regression", "verbosity": -1, "seed": 0, "num_threads": 2},
        lgb.Dataset(labelled.select(pumpfleet.SENSORS).to_numpy(), label=labelled["rul"].to_numpy()),
    )
    last = rolling_means(held_out).group_by("machine_id").agg(pl.all().sort_by("ts").last())
    last = last.join(truth, on="machine_id").sort("machine_id")
    predicted = model.predict(last.select(pumpfleet.SENSORS).to_numpy())
    baseline = float(np.sqrt(np.mean((predicted - last["rul"].to_numpy()) ** 2)))

    print(
        f"pump fleet: ours RMSE {ours['rmse']:.1f} h, baseline {baseline:.1f} h, "
        f"naive {ours['naive_rmse']:.1f} h"
    )
    assert ours["rmse"] < baseline
    assert ours["rmse"] < ours["naive_rmse"]
    assert ours["component_accuracy"] is not None and ours["component_accuracy"] > 0.6
    assert 0.5 <= ours["interval_coverage"] <= 1.0
