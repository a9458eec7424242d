"""The RUL interval: Mondrian split-conformal offsets by band of predicted RUL (see ``train``)."""

from __future__ import annotations

from typing import Any

import numpy as np

INTERVAL_BANDS = 6
MIN_BAND_ROWS = 30


def conformal_interval(
    predicted: np.ndarray, truth: np.ndarray, coverage: float, horizon: float
) -> dict[str, Any]:
    """Mondrian split-conformal offsets: for each equal-count band of ``predicted`` (edges between
    bands), the residual quantiles of ``truth - predicted`` over the rows whose truth is known and
    within ``horizon``. Conservative finite-sample quantiles; one band when rows are few."""
    known = ~np.isnan(truth) & (truth <= horizon)
    p, r = predicted[known], truth[known] - predicted[known]
    if len(r) == 0:
        raise ValueError(f"no held-out rows within {horizon} readings of a failure to calibrate the interval")
    bands = max(1, min(INTERVAL_BANDS, len(r) // MIN_BAND_ROWS))
    edges = np.quantile(p, np.arange(1, bands) / bands) if bands > 1 else np.zeros(0)
    band = np.searchsorted(edges, p, side="right")
    alpha = (1 - coverage) / 2
    lower, upper = [], []
    for b in range(bands):
        rb = r[band == b]
        n = len(rb)
        # the ceil((n + 1)(1 - a)) / n empirical quantile: at least the nominal share covered
        # the interval always holds its own point: a band whose residuals all lie on one side
        # (a model that is biased there) widens towards them instead of excluding the prediction
        low = float(np.quantile(rb, max(0.0, 1 - np.ceil((n + 1) * (1 - alpha)) / n), method="lower"))
        high = float(np.quantile(rb, min(1.0, np.ceil((n + 1) * (1 - alpha)) / n), method="higher"))
        lower.append(min(low, 0.0))
        upper.append(max(high, 0.0))
    return {
        "method": "mondrian-split-conformal",
        "coverage": coverage,
        "horizon": horizon,
        "edges": [float(e) for e in edges],
        "lower": lower,
        "upper": upper,
    }
