"""A model's prediction interval, in numpy only: ``ModelBundle.predict`` and the edge agent's
``EdgeModel`` apply the same offsets."""

from __future__ import annotations

from typing import Any

import numpy as np


def apply_interval(interval: dict[str, Any], rul: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds around point predictions ``rul``: the offsets of each prediction's
    band (one band, scalar offsets, in models from before bands)."""
    edges, lower, upper = interval_arrays(interval)
    band = np.searchsorted(edges, rul, side="right")
    return np.clip(rul + lower[band], 0.0, None), rul + upper[band]


def interval_arrays(interval: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An interval's band edges, lower and upper offsets as float arrays (offsets at least 1-d)."""
    return (
        np.asarray(interval.get("edges", []), np.float64),
        np.atleast_1d(np.asarray(interval["lower"], np.float64)),
        np.atleast_1d(np.asarray(interval["upper"], np.float64)),
    )
