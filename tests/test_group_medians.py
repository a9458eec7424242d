"""``consistency.group_medians``: one sort for every machine's median, equal to a median per machine."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pitstop.monitoring.consistency import group_medians


def per_group(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """What the consistency check computed before: ``np.nanmedian`` machine by machine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array(
            [np.nanmedian(p) if np.isfinite(p).any() else np.nan for p in np.split(values, starts[1:])]
        )


@pytest.mark.parametrize("seed", range(5))
def test_equal_to_a_median_per_machine_with_nan_inf_zeros_and_extremes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(400):
        n = int(rng.integers(1, 60))
        machines = np.sort(rng.integers(0, int(rng.integers(1, 12)), n))
        _, starts, group = np.unique(machines, return_index=True, return_inverse=True)
        values = rng.normal(size=n) * 10.0 ** int(rng.integers(-3, 308))
        kind = rng.random(n)
        values[kind < 0.2] = np.nan
        values[(kind >= 0.2) & (kind < 0.25)] = np.inf
        values[(kind >= 0.25) & (kind < 0.28)] = -np.inf
        values[(kind >= 0.28) & (kind < 0.31)] = 0.0
        expected = per_group(values, starts)
        assert np.array_equal(group_medians(values, group, starts), expected, equal_nan=True)


def test_groups_of_one_all_nan_and_even_sizes() -> None:
    values = np.array([5.0, np.nan, np.nan, 1.0, 4.0, 2.0, 3.0, np.inf, np.nan, 7.0])
    machines = np.array([0, 1, 1, 2, 2, 3, 3, 3, 4, 4])
    _, starts, group = np.unique(machines, return_index=True, return_inverse=True)
    got = group_medians(values, group, starts)
    assert np.array_equal(got, [5.0, np.nan, 2.5, 3.0, 7.0], equal_nan=True)
    assert np.array_equal(got, per_group(values, starts), equal_nan=True)
