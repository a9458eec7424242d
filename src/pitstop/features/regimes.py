"""Operating-regime normalisation of readings, in numpy only (the online state and the edge agent
use it without Polars; ``fit_regimes`` in ``pitstop.features.offline`` fits the regimes)."""

from __future__ import annotations

import numpy as np

from pitstop.features.spec import Regimes


def standardise(sensors: np.ndarray, settings: np.ndarray, regimes: Regimes) -> np.ndarray:
    """Each row's sensors standardised by the mean and std of its nearest regime."""
    regime = assign_regimes(settings, np.asarray(regimes.centroids))
    return np.asarray((sensors - np.asarray(regimes.mean)[regime]) / np.asarray(regimes.std)[regime])


def assign_regimes(settings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each row of operating settings."""
    d = ((settings[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(d.argmin(axis=1))
