"""The training baseline live drift is judged against, built once per model and kept with it.

A predictive-maintenance fleet moves its data on purpose: machines wear, so their sensors and
the model's predictions move with life stage. Comparing a young (or a worn) live fleet with a
training set of whole lives flags the fleet's age, not a fault. The baseline therefore holds what
lets the monitor compare like with like:

- **Life stage × age cells** for the features. Life stage as the model sees it: the quintiles of
  the training rows' out-of-fold predicted RUL; age: bands at 2, 4, 8, 16 and 32 readings (where
  rolling windows fill up and young machines' features change fastest) and at the age quartiles.
  Per cell, every feature's order statistics, row count and machine count. A live window is
  compared with the mixture of the cells weighted by the window's own mix (its rows' predicted
  RUL and age): what the training fleet looked like at the live fleet's wear and age.
- **Age bands** for the prediction: the out-of-fold predictions per age band (the young bands and
  the age deciles), so the live predictions are judged against what the model predicted for
  training machines of the live fleet's ages (conditioning the prediction on itself would test
  nothing).
- **Sensor consistency.** Wear moves a machine's sensors together; a miscalibrated, offset or
  swapped sensor moves alone. Per informative sensor, a ridge regression predicts its last
  reading (``<sensor>__last``) from the other sensors' last readings and age; the residual,
  scaled by its robust spread (1.4826 × MAD), is the sensor's *consistency z*. Training machines
  almost never exceed ``Z_LIMIT`` (the rate is kept per sensor as ``p0``), so a machine whose
  median z in a window does is inconsistent, and many such machines at once are a fault, not wear.

Operating regimes are handled by the feature spec itself (a spec with regimes standardises every
sensor per regime before any feature), so the baseline needs no regime split of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BASELINE = "__baseline__"  # the reference entry that holds the baseline
PREDICTION = "__prediction__"  # the model's own output, profiled like a feature
BAND_LEVELS = np.linspace(0.0, 1.0, 51)  # order statistics kept per cell (every 2%)
STAGE_QUANTILES = np.arange(1, 5) / 5  # life-stage bands: predicted-RUL quintiles
YOUNG_AGES = (2.0, 4.0, 8.0, 16.0, 32.0)  # rolling windows fill up here: features change fastest
Z_LIMIT = 4.0  # a machine's median consistency z beyond this is inconsistent
P0_FLOOR = 1e-3  # the least per-machine null rate assumed (training sets are finite)
RIDGE = 1.0


def build_baseline(
    X: np.ndarray, names: list[str], predictions: np.ndarray, machines: np.ndarray
) -> dict[str, Any]:
    """The baseline of a training set: rows ``X`` (× ``names``, which include ``age``), the
    model's out-of-fold ``predictions`` and each row's machine."""
    X = np.asarray(X, np.float64)
    predictions = np.clip(np.asarray(predictions, np.float64), 0.0, None)
    age = X[:, names.index("age")]
    stage_edges = np.quantile(predictions, STAGE_QUANTILES)
    feature_ages = np.concatenate([YOUNG_AGES, np.quantile(age, (0.25, 0.5, 0.75))])
    prediction_ages = np.concatenate([YOUNG_AGES, np.quantile(age, np.arange(1, 10) / 10)])
    return {
        "stage": _cells(X, names, [predictions, age], [stage_edges, feature_ages], machines),
        "age": _cells(predictions.reshape(-1, 1), [PREDICTION], [age], [prediction_ages], machines),
        "sensors": _consistency(X, names),
    }


def _cells(
    values: np.ndarray, names: list[str], by: list[np.ndarray], edges: list[np.ndarray], machines: np.ndarray
) -> dict[str, Any]:
    """``values``' order statistics per cell of the grid ``by`` is cut into at ``edges``."""
    kept = [np.unique(e) for e in edges]
    cell_of = cells_of(kept, by)
    cells = []
    for cell in range(int(np.prod([len(e) + 1 for e in kept]))):
        rows = cell_of == cell
        if not rows.any():
            cells.append({"n": 0, "machines": 0, "quantiles": {}})
            continue
        q = np.quantile(values[rows], BAND_LEVELS, axis=0, method="inverted_cdf")
        cells.append(
            {
                "n": int(rows.sum()),
                "machines": len(np.unique(machines[rows])),
                "quantiles": {name: [_short(v) for v in q[:, j]] for j, name in enumerate(names)},
            }
        )
    return {"edges": [[float(v) for v in e] for e in kept], "bands": cells}


def cells_of(edges: list[np.ndarray], by: list[np.ndarray]) -> np.ndarray:
    """Each row's cell: its band along every axis of ``by``, numbered row-major."""
    cell = np.zeros(len(by[0]), np.int64)
    for axis_edges, values in zip(edges, by, strict=True):
        cell = cell * (len(axis_edges) + 1) + np.searchsorted(axis_edges, values, side="right")
    return cell


def _short(value: float) -> float:
    """Seven significant digits: the baseline is kept as JSON with every model."""
    return float(f"{value:.7g}")


def _consistency(X: np.ndarray, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per sensor with a ``__last`` feature that varies: the ridge model of it from the others."""
    last = [n for n in names if n.endswith("__last")]
    index = {n: names.index(n) for n in ["age", *last]}
    varying = [n for n in last if np.nanstd(X[:, index[n]]) > 0]
    out: dict[str, dict[str, Any]] = {}
    if len(varying) < 2:
        return out  # one sensor cannot be checked against the others
    for name in varying:
        inputs = [n for n in varying if n != name]
        design = _design(X, index, inputs)
        mu, sd = design.mean(axis=0), design.std(axis=0)
        sd[sd == 0] = 1.0
        Z = np.column_stack([np.ones(len(design)), (design - mu) / sd])
        y = X[:, index[name]]
        beta = np.linalg.solve(Z.T @ Z + RIDGE * np.eye(Z.shape[1]), Z.T @ y)
        residual = y - Z @ beta
        center = float(np.median(residual))
        scale = float(1.4826 * np.median(np.abs(residual - center)))
        if not scale > 0:
            continue
        z = (residual - center) / scale
        out[name.removesuffix("__last")] = {
            "feature": name,
            "inputs": inputs,
            "mu": mu.tolist(),
            "sd": sd.tolist(),
            "beta": beta.tolist(),
            "center": center,
            "scale": scale,
            "p0": max(P0_FLOOR, float(np.mean(np.abs(z) > Z_LIMIT))),
        }
    return out


def _design(X: np.ndarray, index: dict[str, int], inputs: list[str]) -> np.ndarray:
    age = X[:, index["age"]]
    return np.column_stack([age, np.sqrt(np.clip(age, 0.0, None)), X[:, [index[n] for n in inputs]]])


def consistency_z(sensor: dict[str, Any], X: np.ndarray, names: list[str]) -> np.ndarray:
    """Each row's consistency z of one sensor (its entry in ``baseline["sensors"]``)."""
    index = {n: names.index(n) for n in ["age", sensor["feature"], *sensor["inputs"]]}
    design = _design(X, index, sensor["inputs"])
    Z = np.column_stack(
        [np.ones(len(design)), (design - np.asarray(sensor["mu"])) / np.asarray(sensor["sd"])]
    )
    residual = X[:, index[sensor["feature"]]] - Z @ np.asarray(sensor["beta"])
    return np.asarray((residual - sensor["center"]) / sensor["scale"], np.float64)


def band_weights(bands: dict[str, Any], by: list[np.ndarray]) -> np.ndarray:
    """The live rows' share in each cell (``by``: per axis, the rows' predicted RUL or age)."""
    edges = [np.asarray(e, np.float64) for e in bands["edges"]]
    counts = np.bincount(cells_of(edges, by), minlength=len(bands["bands"])).astype(np.float64)
    return counts / max(1.0, counts.sum())
