"""Training: labels with censoring, grouped folds, determinism, the interval, tuning, C-MAPSS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.features import FeatureSpec
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped
from pitstop.sim.cmapss import COLUMNS
from pitstop.training import rul_labels, train_rul_model
from pitstop.training.cmapss import failures, phm08_score, regimes, telemetry
from pitstop.training.train import conformal_interval

CMAPSS = next(
    (
        root / "data" / "cmapss"
        for root in (Path(__file__).resolve().parents[2] / "shared", Path("/work/shared"))
        if (root / "data" / "cmapss" / "train_FD001.txt").exists()
    ),
    Path("shared-data-not-found"),
)
T0 = 1_767_225_600_000_000
HOUR = 3_600_000_000
FAST = {"num_boost_round": 60}


def readings(machine: str, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "machine_id": [machine] * n,
            "seq": list(range(1, n + 1)),
            "ts": [T0 + i * HOUR for i in range(1, n + 1)],
            "x": np.linspace(0, 1, n),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def event(machine: str, seq: int, kind: str, with_seq: bool = True) -> dict[str, object]:
    return {"machine_id": machine, "ts": T0 + seq * HOUR, "seq": seq if with_seq else None, "kind": kind}


def test_labels_count_to_the_next_failure_and_treat_censored_rows_explicitly() -> None:
    rows = pl.concat(
        [
            readings("failed", 10),  # fails at seq 10
            readings("running", 10),  # no failure yet: censored
            readings("maintained", 12),  # maintenance at 5 (censors 1-5), then fails at 12
        ]
    )
    events = pl.DataFrame(
        [
            event("failed", 10, "failure"),
            event("maintained", 5, "maintenance", with_seq=False),
            event("maintained", 12, "failure"),
        ]
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    labels = rul_labels(rows, events, cap=4, horizon=3)
    by = {m: labels.filter(pl.col("machine_id") == m) for m in ("failed", "running", "maintained")}

    failed = by["failed"]
    assert failed["rul_uncapped"].to_list() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert failed["rul"].to_list() == [4, 4, 4, 4, 4, 4, 3, 2, 1, 0]
    assert failed["fails_within"].to_list() == [False] * 6 + [True] * 4
    assert not failed["censored"].any()

    # still running at seq 10: seq s has lived at least 10 - s more; known capped only where >= 4
    running = by["running"]
    assert running["seq"].to_list() == [1, 2, 3, 4, 5, 6]
    assert running["censored"].all() and running["rul_uncapped"].is_null().all()
    assert running["rul"].to_list() == [4.0] * 6
    assert running["rul_bound"].to_list() == [9, 8, 7, 6, 5, 4]
    assert running["fails_within"].to_list() == [False] * 6

    # maintained at seq 5 (placed by its time): rows 1..5 censored at it (bound 4..0: only seq 1
    # reaches the cap); rows 6..12 count to the failure at 12
    maintained = by["maintained"]
    assert maintained["seq"].to_list() == [1, 6, 7, 8, 9, 10, 11, 12]
    assert maintained["censored"].to_list() == [True] + [False] * 7
    assert maintained["rul"].to_list() == [4, 4, 4, 4, 3, 2, 1, 0]


def fd001(units: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    train = telemetry(shipped("fd001_train").filter(pl.col("unit") <= units), "u")
    return train, failures(train)


def test_folds_are_by_machine_and_training_is_reproducible() -> None:
    train, events = fd001(12)
    spec = TURBOFAN.feature_spec
    a = train_rul_model(train, events, spec, folds=4, seed=7, params=FAST)
    b = train_rul_model(
        train.sample(fraction=1.0, shuffle=True, seed=1), events, spec, folds=4, seed=7, params=FAST
    )
    assert len(a.bundle.boosters) == 5  # the final model and four fold models
    for x, y in zip(a.bundle.boosters, b.bundle.boosters, strict=True):
        assert x.model_to_string() == y.model_to_string()
    assert a.bundle.interval == b.bundle.interval
    c = train_rul_model(train, events, spec, folds=4, seed=8, params=FAST)
    assert c.bundle.booster.model_to_string() != a.bundle.booster.model_to_string()

    from pitstop.training.train import _prepare

    data = _prepare(train, events, spec, 125, 30, 4, 7)
    folds_of = pl.DataFrame({"m": data.machines, "f": data.fold}).group_by("m").agg(pl.col("f").n_unique())
    assert (folds_of["f"] == 1).all()
    assert sorted(np.unique(data.fold)) == [0, 1, 2, 3]


def test_conformal_interval_covers_its_nominal_share_by_band() -> None:
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        predicted = rng.uniform(0, 125, n)
        truth = predicted + rng.normal(0, 1 + predicted / 10, n)  # wider when far from failure
        return predicted, truth

    interval = conformal_interval(*draw(20_000), coverage=0.8, horizon=1e9)
    assert len(interval["lower"]) == 6 and len(interval["edges"]) == 5
    assert interval["upper"][-1] - interval["lower"][-1] > 3 * (interval["upper"][0] - interval["lower"][0])
    from pitstop.registry.bundle import apply_interval

    predicted, truth = draw(20_000)
    lower, upper = apply_interval(interval, predicted)
    inside = (truth >= lower) & (truth <= upper)
    assert 0.78 <= inside.mean() <= 0.82
    for band in (predicted < 20, predicted > 105):  # conditional on the band too, not only overall
        assert 0.75 <= inside[band].mean() <= 0.85


@pytest.mark.heavy
def test_tuning_runs_optuna_on_the_grouped_folds() -> None:
    train, events = fd001(8)
    result = train_rul_model(
        train, events, TURBOFAN.feature_spec, folds=3, seed=3, params=FAST, tune_trials=2
    )
    assert result.tuning is not None and len(result.tuning["trials"]) == 2
    assert result.tuning["trials"][0]["params"]["num_leaves"] == 7  # the defaults are the first trial
    assert result.bundle.metrics["tune_trials"] == 2
    assert result.bundle.params["tuned"] is True


def test_training_without_failures_is_a_clear_error() -> None:
    train, _ = fd001(6)
    no_events = pl.DataFrame(
        schema={"machine_id": pl.String, "ts": pl.Datetime("us", "UTC"), "kind": pl.String}
    )
    with pytest.raises(ValueError, match="no failures"):
        train_rul_model(train, no_events, FeatureSpec(("s2", "s3")), folds=3)


def write_cmapss(path: Path, frame: pl.DataFrame) -> Path:
    lines = [" ".join(f"{v:g}" for v in row) for row in frame.select(COLUMNS).iter_rows()]
    path.write_text("\n".join(lines) + "\n")
    return path


def regimed(frame: pl.DataFrame) -> pl.DataFrame:
    """FD001 engines as if run in six operating conditions (as FD002/FD004): each cycle's regime
    shifts its settings and every sensor."""
    rng = np.random.default_rng(5)
    regime = rng.integers(0, 6, frame.height)
    shift = np.arange(6, dtype=float)
    out = frame.with_columns(
        pl.Series("setting1", [0.0, 10, 20, 25, 35, 42])[regime] + pl.col("setting1"),
        pl.Series("setting2", [0.0, 0.25, 0.62, 0.7, 0.84, 0.84])[regime] + pl.col("setting2"),
        pl.Series("setting3", [100.0, 100, 100, 60, 100, 60])[regime],
    )
    sensors = [c for c in COLUMNS if c.startswith("s") and c[1:].isdigit()]
    return out.with_columns(pl.col(s) * (1 + 0.05 * pl.Series(shift[regime])) for s in sensors)


@pytest.mark.parametrize(
    "several_regimes", [pytest.param(False, marks=pytest.mark.heavy), True]
)  # FD001 alone: test_fd001_meets_the_published_bar
def test_benchmark_cmapss_works_on_any_subset_in_the_format(tmp_path: Path, several_regimes: bool) -> None:
    train = shipped("fd001_train").filter(pl.col("unit") <= 15)
    test = shipped("fd001_test").filter(pl.col("unit") <= 10)
    truth = shipped("fd001_rul").filter(pl.col("unit") <= 10)
    if several_regimes:
        train, test = regimed(train), regimed(test)
    args = [
        "--train",
        str(write_cmapss(tmp_path / "train_FDX.txt", train)),
        "--test",
        str(write_cmapss(tmp_path / "test_FDX.txt", test)),
        "--rul",
        str(tmp_path / "RUL_FDX.txt"),
    ]
    (tmp_path / "RUL_FDX.txt").write_text("\n".join(str(v) for v in truth.sort("unit")["rul"]) + "\n")
    result = CliRunner().invoke(cli, ["benchmark", "cmapss", *args, "--seed", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"rmse", "phm08_score", "interval_coverage", "train_seconds"} <= set(out)
    assert out["engines"] == 10 and out["regimes"] == (6 if several_regimes else 1)
    assert 0 < out["rmse"] < 40


def test_benchmark_rejects_a_file_not_in_the_format(tmp_path: Path) -> None:
    bad = tmp_path / "train.txt"
    bad.write_text("1 1 0.5\n")
    result = CliRunner().invoke(
        cli, ["benchmark", "cmapss", "--train", str(bad), "--test", str(bad), "--rul", str(bad)]
    )
    assert result.exit_code == 2
    assert "invalid_data" in result.output and "C-MAPSS format" in result.output


def test_phm08_score_penalises_late_predictions_more() -> None:
    assert phm08_score(np.array([10.0])) == pytest.approx(np.e - 1)
    assert phm08_score(np.array([-13.0])) == pytest.approx(np.e - 1)
    assert phm08_score(np.array([5.0])) > phm08_score(np.array([-5.0]))


def test_regimes_are_detected_from_the_settings() -> None:
    train = shipped("fd001_train")
    assert regimes(train) == 1
    assert regimes(regimed(train)) == 6


@pytest.mark.slow
@pytest.mark.skipif(not CMAPSS.exists(), reason="the shared C-MAPSS data is not here")
def test_fd001_meets_the_published_bar() -> None:
    """One seed of bench/cmapss.py: the target is RMSE <= 11 and score <= 190 over five seeds."""
    from pitstop.training.cmapss import benchmark

    out = benchmark(CMAPSS / "train_FD001.txt", CMAPSS / "test_FD001.txt", CMAPSS / "RUL_FD001.txt", seed=0)
    assert out["rmse"] <= 11.2
    assert out["phm08_score"] <= 200
    assert 0.75 <= out["interval_coverage"] <= 0.85


def test_evaluate_scores_the_champion_on_held_out_engines(trained: Platform, tmp_path: Path) -> None:
    test = write_cmapss(tmp_path / "test.txt", shipped("fd001_test").filter(pl.col("unit") <= 20))
    rul = tmp_path / "rul.txt"
    rul.write_text("\n".join(str(v) for v in shipped("fd001_rul").sort("unit")["rul"][:20]) + "\n")
    data_dir = str(trained.settings.data_dir)
    trained.close()
    result = CliRunner().invoke(
        cli, ["evaluate", "--data-dir", data_dir, "--test", str(test), "--rul", str(rul)]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["engines"] == 20 and out["alias"] == "champion" and out["version"]
    assert out["rmse"] < 25 and 0 <= out["interval_coverage"] <= 1


def test_train_with_tuning_logs_the_trials_and_lineage(platform: Platform) -> None:
    import pyarrow as pa

    from pitstop.training import train_and_register

    train, events = fd001(8)
    frame = train.with_columns(
        pl.col("ts").dt.date().alias("day"), pl.lit(None, pl.Int64).alias("bus_position")
    )
    platform.lake.append("telemetry", frame.to_arrow(), app_id="test", position=1)
    ev = events.with_columns(pl.lit("run to failure").alias("detail"))
    platform.lake.append("events", pa.Table.from_pylist(ev.to_dicts()), app_id="test", position=1)
    result = train_and_register(platform, alias="challenger", tune_trials=2)
    assert platform.registry.alias_version("challenger") == result.version
    [version] = platform.registry.versions()
    run = platform.registry.client.get_run(version["run_id"])
    assert run.data.metrics["tune_trials"] == 2
    assert run.data.params["tuned"] == "True"
    artifacts = {a.path for a in platform.registry.client.list_artifacts(version["run_id"])}
    assert {"tuning.json", "model_card.md", "model"} <= artifacts
    assert result.machines == 8 and result.bundle.metrics["censored_rows"] == 0
