"""The C-MAPSS benchmark: train on a training file, score the last cycle of each test engine.

Works on any subset in the C-MAPSS text format (FD001-FD004 or a file of your own): each engine
is one machine, each cycle one reading; a training engine fails at its last cycle. Subsets that
run in several operating conditions (FD002, FD004) are detected from the settings and normalised
by regime.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pitstop.features import FeatureSpec, build_features
from pitstop.registry.bundle import ModelBundle
from pitstop.schema import TURBOFAN
from pitstop.sim.cmapss import SETTINGS, read_cmapss, read_rul
from pitstop.training.train import Progress, train_rul_model

T0_US = 1_767_225_600_000_000  # 2026-01-01: a cycle is stamped an hour after the one before
HOUR_US = 3_600_000_000


def phm08_score(d: np.ndarray) -> float:
    """The PHM08 challenge score of errors ``d = predicted - true``: late predictions cost more."""
    d = np.asarray(d, np.float64)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13) - 1, np.exp(d / 10) - 1)))


def telemetry(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """C-MAPSS rows as lake telemetry: ``machine_id`` (prefix + unit), ``seq`` = cycle, ``ts``."""
    return frame.select(
        pl.format(prefix + "{}", "unit").alias("machine_id"),
        pl.col("cycle").alias("seq"),
        (pl.lit(T0_US) + pl.col("cycle") * HOUR_US).cast(pl.Datetime("us", "UTC")).alias("ts"),
        pl.exclude("unit", "cycle"),
    )


def failures(telemetry: pl.DataFrame) -> pl.DataFrame:
    """A failure event at each machine's last reading (run-to-failure trajectories)."""
    return (
        telemetry.group_by("machine_id")
        .agg(pl.col("seq").max(), pl.col("ts").max())
        .with_columns(pl.lit("failure").alias("kind"))
    )


def regimes(frame: pl.DataFrame, min_share: float = 0.01) -> int:
    """Operating conditions in a C-MAPSS frame: distinct rounded settings that hold at least
    ``min_share`` of the rows (1 for FD001/FD003, 6 for FD002/FD004)."""
    rounded = frame.select(
        pl.col("setting1").round(0), pl.col("setting2").round(2), pl.col("setting3").round(0)
    )
    counts = rounded.group_by(SETTINGS).len()
    return int((counts["len"] >= min_share * frame.height).sum())


def spec_for(frame: pl.DataFrame, base: FeatureSpec | None = None) -> FeatureSpec:
    """The turbofan spec, with regime normalisation when the frame runs in several conditions."""
    base = base or TURBOFAN.feature_spec
    k = regimes(frame)
    return replace(base, regime_count=k if k > 1 else 0)


def evaluate(bundle: ModelBundle, test: pl.DataFrame, truth: pl.DataFrame) -> dict[str, Any]:
    """Score ``bundle`` at the last reading of each machine of ``test`` against ``truth``
    (``machine_id, rul``: the true, uncapped RUL after that reading)."""
    last = (
        build_features(test, bundle.spec)
        .group_by("machine_id")
        .agg(pl.all().sort_by("seq").last())
        .join(truth.select("machine_id", "rul"), on="machine_id", how="inner")
        .sort("machine_id")
    )
    if last.height == 0:
        raise ValueError("no test machine has a true RUL to compare with")
    rul, lower, upper = bundle.predict(last.select(bundle.spec.names).to_numpy())
    y = last["rul"].to_numpy().astype(np.float64)
    d = rul - y
    return {
        "rmse": float(np.sqrt(np.mean(d**2))),
        "phm08_score": phm08_score(d),
        "mae": float(np.mean(np.abs(d))),
        "interval_coverage": float(np.mean((y >= lower) & (y <= upper))),
        "interval_width": float(np.mean(upper - lower)),
        "engines": last.height,
    }


def read_test(test_path: str | Path, rul_path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A C-MAPSS test file and its RUL file as telemetry and ``machine_id, rul``."""
    test = telemetry(read_cmapss(test_path), "test-")
    truth = read_rul(rul_path).select(pl.format("test-{}", "unit").alias("machine_id"), "rul")
    units = test["machine_id"].n_unique()
    if truth.height != units:
        raise ValueError(f"{rul_path} has {truth.height} RUL values for {units} test engines")
    return test, truth


def benchmark(
    train_path: str | Path,
    test_path: str | Path,
    rul_path: str | Path,
    *,
    seed: int = 42,
    rul_cap: float = 125,
    coverage: float = 0.8,
    folds: int = 5,
    tune_trials: int = 0,
    interval_horizon: float = 150,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on ``train_path`` and evaluate at the last cycle of each engine of ``test_path``."""
    raw = read_cmapss(train_path)
    train = telemetry(raw, "train-")
    test, truth = read_test(test_path, rul_path)
    spec = spec_for(raw)
    started = time.perf_counter()
    result = train_rul_model(
        train,
        failures(train),
        spec,
        rul_cap=rul_cap,
        folds=folds,
        coverage=coverage,
        seed=seed,
        tune_trials=tune_trials,
        interval_horizon=interval_horizon,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    scores = evaluate(result.bundle, test, truth)
    return {
        **scores,
        "train_seconds": seconds,
        "train_engines": result.machines,
        "regimes": spec.regime_count or 1,
        "features": len(spec.names),
        "seed": seed,
        "cv_rmse": result.bundle.metrics["cv_rmse"],
    }
