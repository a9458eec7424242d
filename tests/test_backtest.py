"""The backtest: replay arithmetic on hand-made lives, the CLI on C-MAPSS and on the lake, and
the FD001 target (our cost below both baselines, >= 95% of failures caught in time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.maintenance import RiskPolicy
from pitstop.platform import Platform
from pitstop.training.backtest import Costs, Life, best_fixed_interval, fixed_interval, replay, run_to_failure
from tests.test_training import CMAPSS

COSTS = Costs(failure=10, repair=2, inspection=0.5)


def life(machine: str, length: int, failed: bool, lower: list[float] | None = None) -> Life:
    """A life of ``length`` readings (seq 1..length); by default a perfect lower bound."""
    seq = np.arange(1, length + 1)
    bound = np.array(lower, float) if lower is not None else (length - seq).astype(float)
    return Life(machine, seq, bound, length, failed)


def test_replay_counts_catches_late_orders_and_false_alarms() -> None:
    policy = RiskPolicy(lead_time=10, threshold=15, hysteresis=5, recheck_after=5)
    perfect = life("a", 100, True)  # order at lower 14 (seq 86), worked at 96: 4 before failure
    late = life("b", 100, True, [50.0] * 95 + [3.0] * 5)  # order at seq 96: the failure comes first
    # an early scare (lower 12 at seq 20-29), then a perfect bound: one false alarm, then caught
    scare = life("c", 100, True, [50.0] * 19 + [12.0] * 10 + [float(100 - s) for s in range(30, 101)])
    healthy = life("d", 80, False, [40.0] * 80)  # censored, never at risk
    out = replay([perfect, late, scare, healthy], policy, COSTS, horizon=20)
    assert (out.failures, out.caught, out.missed, out.late_orders) == (3, 2, 1, 1)
    assert out.false_alarms == 1 and out.median_lead == 14.0
    # a: repaired at 96 (96 readings run); b: failed (100); c: repaired at 96; d: 80
    assert out.readings == 96 + 100 + 96 + 80
    assert out.raw_cost == 2 + 10 + (0.5 + 2) + 0
    assert out.cost == pytest.approx(out.raw_cost / out.readings * 380)


def test_baselines() -> None:
    lives = [life("a", 100, True), life("b", 200, True), life("c", 150, False)]
    rtf = run_to_failure(lives, COSTS)
    assert (rtf.raw_cost, rtf.cost, rtf.missed) == (20, 20, 2)
    every_120 = fixed_interval(lives, COSTS, 120)  # a fails first; b and c are renewed at 120
    assert (every_120.raw_cost, every_120.readings, every_120.caught) == (10 + 2 + 2, 100 + 120 + 120, 1)
    best = best_fixed_interval(lives, COSTS)
    assert best.cost <= every_120.cost and best.cost <= min(
        fixed_interval(lives, COSTS, t).cost for t in range(1, 201)
    )


def _subset(tmp_path: Path, units: int) -> Path:
    """The first ``units`` engines of FD001's training file, in the C-MAPSS format."""
    out = tmp_path / "train_subset.txt"
    with open(CMAPSS / "train_FD001.txt") as src, open(out, "w") as dst:
        dst.writelines(line for line in src if int(line.split()[0]) <= units)
    return out


@pytest.mark.heavy  # the CLI: test_backtest_cli_on_the_lake; a C-MAPSS file: the FD001 backtest
@pytest.mark.skipif(not CMAPSS.exists(), reason="the shared C-MAPSS data is not here")
def test_backtest_cli_on_a_cmapss_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["backtest", "--cmapss", str(_subset(tmp_path, 12)), "--folds", "3", "--search", "--json"],
        env={"PITSTOP_TRAIN_FOLDS": "3", "PITSTOP_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    for key in ("caught_fraction", "median_lead", "false_alarms_per_1000", "cost"):
        assert key in report
    assert report["machines"] == 12 and report["failures"] == 12 and report["searched"]
    assert report["run_to_failure_cost"] == 12 * 10.0  # every engine fails once
    assert report["cost"] <= report["run_to_failure_cost"]
    assert "run to failure" in result.output and "fixed interval (every" in result.output


def test_backtest_cli_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("not a c-mapss file\n")
    result = CliRunner().invoke(
        cli, ["backtest", "--cmapss", str(bad)], env={"PITSTOP_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code != 0 and "invalid_data" in result.output


def test_backtest_cli_on_the_lake(trained: Platform, tmp_path: Path) -> None:
    data_dir = trained.settings.data_dir
    result = CliRunner().invoke(
        cli,
        ["backtest", "--data-dir", str(data_dir), "--folds", "2", "--json"],
        env={"PITSTOP_TRAIN_FOLDS": "2"},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["source"].startswith("lake:telemetry@v") and report["failures"] > 0


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.skipif(not CMAPSS.exists(), reason="the shared C-MAPSS data is not here")
def test_fd001_backtest_beats_both_baselines_and_catches_95_percent() -> None:
    result = CliRunner().invoke(cli, ["backtest", "--cmapss", str(CMAPSS / "train_FD001.txt"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["caught_fraction"] >= 0.95
    assert report["cost"] < report["best_fixed_interval_cost"] < report["run_to_failure_cost"]
