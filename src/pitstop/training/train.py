from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from pitstop.features import FeatureSpec, build_features, fit_regimes
from pitstop.registry.bundle import ModelBundle
from pitstop.training.labels import rul_labels

Progress = Callable[[str, int, int], None]

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.5,
    "max_bin": 63,  # with feature_fraction 0.5: a third of the training time, same CV error
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_boost_round": 400,
}


@dataclass
class TrainResult:
    bundle: ModelBundle
    rows: int
    machines: int
    seconds: float


def train_rul_model(
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    spec: FeatureSpec,
    *,
    rul_cap: float = 125,
    folds: int = 5,
    coverage: float = 0.8,
    seed: int = 42,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a LightGBM RUL regressor, grouped by machine.

    Grouped K-fold out-of-fold residuals give the cross-validated metrics and the interval
    (split-conformal style: empirical residual quantiles), then a final model is fit on all rows.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    started = time.perf_counter()
    spec = fit_regimes(telemetry, spec, seed=seed)
    data = rul_labels(build_features(telemetry, spec, events), events, rul_cap)
    if data.height == 0:
        raise ValueError("no labelled rows: training needs machines with a failure event")
    X = data.select(spec.names).to_numpy()
    y = data["rul"].to_numpy().astype(float)
    machines = data["machine_id"].to_numpy()
    unique = np.unique(machines)
    if len(unique) < folds:
        raise ValueError(
            f"need at least {folds} failed machines for {folds} grouped folds, have {len(unique)}"
        )
    p = {**DEFAULT_PARAMS, **(params or {})}
    rounds = int(p.pop("num_boost_round"))
    lgb_params = {
        **p,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": min(2, os.cpu_count() or 1),
        "verbosity": -1,
    }
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(unique), np.arange(len(unique)) % folds, strict=True))
    fold = np.array([fold_of[m] for m in machines])
    oof = np.empty_like(y)
    total = folds + 1
    for k in range(folds):
        if progress:
            progress(f"fold {k + 1}/{folds}", k, total)
        train, test = fold != k, fold == k
        booster = _fit(X[train], y[train], spec.names, lgb_params, rounds)
        oof[test] = np.clip(booster.predict(X[test], num_threads=1), 0.0, None)
    if progress:
        progress("final model", folds, total)
    booster = _fit(X, y, spec.names, lgb_params, rounds)
    if progress:
        progress("done", total, total)
    residual = y - oof
    alpha = (1 - coverage) / 2
    interval = {
        "lower": float(np.quantile(residual, alpha)),
        "upper": float(np.quantile(residual, 1 - alpha)),
        "coverage": coverage,
    }
    covered = (y >= np.clip(oof + interval["lower"], 0, None)) & (y <= oof + interval["upper"])
    metrics = {
        "cv_rmse": float(np.sqrt(np.mean(residual**2))),
        "cv_mae": float(np.mean(np.abs(residual))),
        "cv_interval_coverage": float(covered.mean()),
        "train_rows": float(len(y)),
        "train_machines": float(len(unique)),
    }
    reference = {
        name: {
            "mean": float(np.mean(X[:, i])),
            "std": float(np.std(X[:, i])),
            "p01": float(np.quantile(X[:, i], 0.01)),
            "p50": float(np.quantile(X[:, i], 0.5)),
            "p99": float(np.quantile(X[:, i], 0.99)),
        }
        for i, name in enumerate(spec.names)
    }
    bundle = ModelBundle(
        booster=booster,
        spec=spec,
        interval=interval,
        metrics=metrics,
        params={**lgb_params, "num_boost_round": rounds, "rul_cap": rul_cap, "folds": folds},
        reference=reference,
        rul_cap=rul_cap,
    )
    return TrainResult(bundle, len(y), len(unique), time.perf_counter() - started)


def _fit(X: np.ndarray, y: np.ndarray, names: list[str], params: dict[str, Any], rounds: int) -> lgb.Booster:
    ds = lgb.Dataset(X, label=y, feature_name=names, free_raw_data=True)
    return lgb.train(params, ds, num_boost_round=rounds)
