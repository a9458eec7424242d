"""``--tune``: an Optuna search of the LightGBM parameters on the training's grouped folds."""

from __future__ import annotations

from typing import Any

import numpy as np

from pitstop.training.train import Progress, _binned, _cross_validate, _Data, _lgb_params

# what ``--tune`` searches: (low, high, log scale); ints for integer parameters
SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (0.02, 0.2, True),
    "num_leaves": (4, 63, True),
    "min_data_in_leaf": (10, 200, True),
    "feature_fraction": (0.3, 1.0, False),
    "lambda_l2": (1e-3, 30.0, True),
    "num_boost_round": (100, 1000, False),
}


def tune(
    data: _Data,
    folds: int,
    seed: int,
    trials: int,
    *,
    base: dict[str, Any],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Optuna (TPE, seeded) over the LightGBM parameters; each trial's objective is the grouped
    cross-validated RMSE on the same folds. Returns the best parameters and every trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        if progress:
            progress(f"tuning trial {trial.number + 1}/{trials}", trial.number, trials)
        p = dict(base)
        for name, (low, high, log) in SEARCH_SPACE.items():
            if isinstance(low, int):
                p[name] = trial.suggest_int(name, low, int(high), log=log)
            else:
                p[name] = trial.suggest_float(name, low, high, log=log)
        rounds = int(p.pop("num_boost_round"))
        oof, _ = _cross_validate(
            data, folds, _lgb_params(p, seed), rounds, binned=_binned(data, _lgb_params(p, seed))
        )
        return float(np.sqrt(np.mean((data.y - oof) ** 2)))

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    first = {k: min(max(base[k], low), high) for k, (low, high, _) in SEARCH_SPACE.items() if k in base}
    study.enqueue_trial(first)  # the defaults (within the ranges) are trial one
    study.optimize(objective, n_trials=trials)
    if progress:
        progress("tuning done", trials, trials)
    return {
        "best_params": dict(study.best_params),
        "best_cv_rmse": float(study.best_value),
        "trials": [{"number": t.number, "value": t.value, "params": t.params} for t in study.trials],
    }
