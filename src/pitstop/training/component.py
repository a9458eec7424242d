"""Which component the coming failure is in: a multiclass LightGBM over the RUL model's features."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

if TYPE_CHECKING:
    from pitstop.training.train import _Data

COMPONENT_PARAMS: dict[str, Any] = {
    "objective": "multiclass",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "max_bin": 63,
}
COMPONENT_ROUNDS = 100
COMPONENT_ROWS = 20_000  # consecutive readings are near copies: a strided sample learns the same


def train_component_model(
    data: _Data, rul_cap: float, folds: int, seed: int
) -> tuple[lgb.Booster, list[str], float] | None:
    """Which component the coming failure is in, learned from the labels: the readings within
    ``rul_cap`` of a failure that named its component (further out, nothing shows yet). Needs two
    components or more. Returns the model, its classes and the grouped cross-validated accuracy at
    those readings; None when there is nothing to learn."""
    rows = component_rows(data, rul_cap)
    return fit_component_model(data.X[rows], data, rows, folds, seed)


def component_rows(data: _Data, rul_cap: float) -> np.ndarray:
    """The rows the component model learns from: a strided sample of the readings within
    ``rul_cap`` of a failure that named its component."""
    rows = (data.component != "") & ~np.isnan(data.uncapped) & (data.uncapped <= rul_cap)
    chosen = np.flatnonzero(rows)
    return chosen[:: max(1, len(chosen) // COMPONENT_ROWS)]


def fit_component_model(
    X: np.ndarray, data: _Data, rows: np.ndarray, folds: int, seed: int
) -> tuple[lgb.Booster, list[str], float] | None:
    """The component model on ``X``, the features of ``data``'s ``rows`` (``component_rows``)."""
    classes = sorted(set(data.component[rows].tolist()))
    if len(classes) < 2:
        return None
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in data.component[rows]], np.float64)
    fold = data.fold[rows]
    from pitstop.training.train import _lgb_params

    params = _lgb_params({**COMPONENT_PARAMS, "num_class": len(classes)}, seed)
    names = data.spec.names
    right = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any() or len(np.unique(y[train])) < len(classes):
            continue
        model = lgb.train(params, lgb.Dataset(X[train], label=y[train], feature_name=names), COMPONENT_ROUNDS)
        p = np.asarray(model.predict(X[test], num_threads=1))
        right += int((p.argmax(axis=1) == y[test]).sum())
    final = lgb.train(params, lgb.Dataset(X, label=y, feature_name=names), COMPONENT_ROUNDS)
    return final, classes, right / len(y)
