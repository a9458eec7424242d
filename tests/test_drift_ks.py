"""The drift check's KS kernels against scipy: the statistic of ``ks_2samp`` to rounding, its
asymptotic p-value (``kstwo.sf``, which ``ks_2samp`` takes past 10,000 rows) to a few parts in a
million where a verdict could turn on it, and the same verdicts from a reference sorted once."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp, kstwo

from pitstop.monitoring.drift import SortedReference, drift_between
from pitstop.monitoring.drift_ks import EXPANSION_N, ks_sf, ks_sorted, sorted_columns


def _sample(rng: np.random.Generator, kind: int, size: int, shift: float) -> np.ndarray:
    if kind == 0:  # discrete: every value tied, within and across the samples
        return rng.integers(0, 5, size).astype(float) + np.round(shift)
    if kind == 1:
        return rng.normal(shift, 1.0, size)
    return np.round(rng.normal(shift, 1.0, size), 1)  # some ties


def test_the_statistic_is_scipys_on_ties_and_tiny_samples() -> None:
    rng = np.random.default_rng(7)
    for trial in range(150):
        kind = trial % 3
        a = _sample(rng, kind, int(rng.integers(1, 80)), 0.0)
        b = _sample(rng, kind, int(rng.integers(1, 80)), float(rng.choice([0.0, 0.3, 1.0])))
        expected = ks_2samp(a, b, method="asymp").statistic
        assert ks_sorted(np.sort(a), np.sort(b)) == pytest.approx(expected, abs=1e-12), (trial, a, b)
    assert ks_sorted(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert ks_sorted(np.array([1.0]), np.array([2.0])) == 1.0
    assert ks_sorted(np.array([2.0]), np.array([1.0])) == 1.0


GRIDS = [(EXPANSION_N, (0.2, 7.0, 80)), (3000, (0.2, 7.0, 40)), (25_000, (1.5, 2.5, 5))]  # z = sqrt(n)·d


@pytest.mark.parametrize(("n", "z"), GRIDS)
def test_the_p_value_is_scipys_asymptotic_one(n: int, z: tuple[float, float, int]) -> None:
    d = np.linspace(*z) / np.sqrt(n)  # scipy takes ~30 ms a value at n = 25,000
    ours, theirs = ks_sf(d, n), kstwo.sf(d, n)
    near = theirs > 1e-6  # where alpha / features could be
    assert np.max(np.abs(ours[near] / theirs[near] - 1)) < 3e-5
    tail = theirs > 1e-13
    assert np.max(np.abs(ours[tail] / theirs[tail] - 1)) < 2e-3
    assert np.all(np.diff(ks_sf(np.linspace(0, 10, 2000) / np.sqrt(n), n)) <= 0)  # monotone past the cut
    small = np.linspace(0.01, 0.3, 7)
    assert ks_sf(small, 150).tolist() == pytest.approx(kstwo.sf(small, 150).tolist(), rel=1e-12)


def test_drift_between_matches_ks_2samp_verdicts_and_a_sorted_reference_changes_nothing() -> None:
    rng = np.random.default_rng(3)
    rows, features = 12_000, 8
    ref = np.column_stack([_sample(rng, j % 3, rows, 0.0) for j in range(features)])
    shifts = [0.0, 0.06, 0.0, 0.0, 0.1, 0.04, 0.0, 0.5]
    cur = np.column_stack([_sample(rng, j % 3, rows // 2, shifts[j]) for j in range(features)])
    ref[::97, 2] = np.nan  # dropped, as ks_2samp would need them dropped
    cur[::89, 4] = np.inf
    names = [f"f{j}" for j in range(features)]
    ours = drift_between(ref, cur, names, psi_threshold=0.0, correction="bonferroni")
    for j, feature in enumerate(ours):
        a, b = ref[:, j][np.isfinite(ref[:, j])], cur[:, j][np.isfinite(cur[:, j])]
        expected = ks_2samp(a, b, method="asymp")
        assert feature.ks == pytest.approx(expected.statistic, abs=1e-9)
        assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-4, abs=1e-12)
        assert feature.drifted == (min(1.0, expected.pvalue * features) < 0.05)
    assert {f.name for f in ours if f.drifted} >= {"f4", "f7"}
    prepared = SortedReference.of(ref)
    again = drift_between(prepared, cur, names, psi_threshold=0.0, correction="bonferroni")
    assert again == ours and drift_between(prepared, cur, names, psi_threshold=0.0) == drift_between(
        ref, cur, names, psi_threshold=0.0
    )


def test_sorted_columns_drop_what_is_not_finite() -> None:
    X = np.array([[3.0, np.nan], [np.inf, 1.0], [1.0, -np.inf], [2.0, 0.0]])
    a, b = sorted_columns(X)
    assert a.tolist() == [1.0, 2.0, 3.0] and b.tolist() == [0.0, 1.0]
    assert [len(c) for c in sorted_columns(np.full((3, 2), np.nan))] == [0, 0]
    empty = drift_between(np.ones((5, 1)), np.full((5, 1), np.nan), ["x"])
    assert empty[0].ks == 0 and empty[0].p_value == 1 and not empty[0].drifted
