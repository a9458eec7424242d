"""The two-sample KS test's kernels for ``drift.py``: sorted samples, the statistic from one
sorted merge, and scipy's asymptotic p-value without its per-call cost.

- ``sorted_columns``: each column of a matrix sorted once (transposed first: a contiguous sort
  is three times faster than one down a strided column), non-finite values dropped;
- ``ks_sorted``: the statistic of two sorted samples from one ``searchsorted`` of the current
  values into the reference (plus one for the few current values tied with a reference value),
  equal to ``scipy.stats.ks_2samp``'s to the last bit;
- ``ks_sf``: ``scipy.stats.kstwo.sf(d, n)``, the p-value ``ks_2samp(method="asymp")`` (and its
  ``"auto"`` past 10,000 rows) takes, vectorised. scipy computes it with Smirnov's exact one-sided
  sum, O(n) terms and ~100 ms a call at n = 25,000; here with the Pelz-Good expansion of the
  Kolmogorov distribution in ``1/sqrt(n)`` (scipy's own method for large n), within a few parts
  in a million of scipy's wherever the p-value is above 1e-13. Small ``n`` (where the expansion
  is not good enough) goes to scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import kolmogorov
from scipy.stats import kstwo

__all__ = ["ks_sf", "ks_sorted", "sorted_columns"]

EXPANSION_N = 2000  # from here on the expansion (below: scipy's exact methods, a few ms a call)
TAIL_Z2 = 18.0  # n·d² past which the expansion's corrections cancel to noise (p below ~1e-15)
_PI2 = np.pi**2
_SQRT2PI = np.sqrt(2 * np.pi)


def sorted_columns(X: np.ndarray) -> list[np.ndarray]:
    """Each column of ``X`` (rows × columns) sorted ascending, without NaN or infinities."""
    a = np.ascontiguousarray(np.asarray(X, np.float64).T)
    a.sort(axis=1)  # NaN sorts last, -inf first and inf just before NaN
    if a.size == 0 or (np.isfinite(a[:, 0]).all() and np.isfinite(a[:, -1]).all()):
        return list(a)
    return [
        col[np.searchsorted(col, -np.inf, side="right") : np.searchsorted(col, np.inf, side="left")]
        for col in a
    ]


def ks_sorted(r: np.ndarray, c: np.ndarray) -> float:
    """The two-sample KS statistic sup |F_r - F_c| of sorted samples ``r`` and ``c``.

    Where F_c jumps (at each current value) F_r - F_c is lowest; just before it, at the last
    reference value below it, highest. Counts of reference values at or below each current value
    give both (strictly below: the same count, except where the value is also in ``r``)."""
    n, m = len(r), len(c)
    if n == 0 or m == 0:
        return 0.0
    right = np.searchsorted(r, c, side="right")  # reference values <= each current value
    f_r = right / n  # F_r at each current value
    upto = np.arange(m + 1, dtype=np.float64) / m  # F_c before each current value, and at the last
    lowest = float(np.max(upto[1:] - f_r))  # max F_c - F_r, at current values (exact at a tie's last)
    # a value of both samples (where right is 0, r[-1] is no current value: that is below r[0])
    tied = r[right - 1] == c
    if tied.any():  # F_r just below it: count the reference values below it
        first = np.ones(m, bool)
        first[1:] = c[1:] != c[:-1]
        left = right.copy()
        at = np.flatnonzero(tied & first)
        left[at] = np.searchsorted(r, c[at], side="left")
        left[tied & ~first] = 0  # the first of a run of equal values stands for the run
        f_r = left / n
    highest = float(np.max(f_r - upto[:-1]))  # max F_r - F_c, just below each current value
    return max(lowest, highest, 0.0)


def ks_sf(d: np.ndarray, n: int) -> np.ndarray:
    """P(D_n > d) for the two-sided one-sample KS statistic of ``n`` values, as
    ``scipy.stats.kstwo.sf(d, n)``; ``ks_2samp`` asks it at n = round(n1·n2 / (n1 + n2))."""
    d = np.asarray(d, np.float64)
    if n < EXPANSION_N:
        return np.asarray(kstwo.sf(d, n), np.float64)
    z2 = n * d * d
    z = np.sqrt(np.minimum(z2, TAIL_Z2))
    p = _pelz_good_sf(z, n)
    tail = z2 > TAIL_Z2  # beyond: Kolmogorov's limit scaled to meet the expansion at the cut
    if tail.any():
        root = np.sqrt(n)
        stephens = root + 0.12 + 0.11 / root
        cut = np.sqrt(TAIL_Z2 / n)
        scale = _pelz_good_sf(np.array([np.sqrt(TAIL_Z2)]), n)[0] / kolmogorov(stephens * cut)
        p[tail] = scale * kolmogorov(stephens * d[tail])
    return np.clip(p, 0.0, 1.0)


def _pelz_good_sf(z: np.ndarray, n: int) -> np.ndarray:
    """1 - (K0 + K1/√n + K2/n + K3/n^1.5)(z) at z = √n·d: the Li-Chien/Korolyuk expansion in
    Pelz and Good's form for small z (as ``scipy.stats._ksstats._kolmogn_PelzGood``), with
    1 - K0 from ``kolmogorov`` (no cancellation in the upper tail)."""
    z = np.asarray(z, np.float64)
    out = np.asarray(kolmogorov(z), np.float64).copy()
    live = z > 0.05  # below, the series underflow and the CDF is 0
    if not live.any():
        return out
    x = z[live][:, None]
    x2, x4, x6 = x**2, x**4, x**6
    k = np.arange(1, int(np.ceil(16 * x.max() / np.pi)) + 1, dtype=np.float64)[None, :]
    m2 = (2 * k - 1) ** 2  # odd squares
    q = np.exp(-_PI2 / 8 / x2 * m2)  # q^(m²)
    c1 = -x2 + _PI2 / 4 * m2
    c2 = 6 * x6 + 2 * x4 + (2 * x4 - 5 * x2) * _PI2 / 4 * m2 + _PI2**2 * (1 - 2 * x2) / 16 * m2**2
    c3 = (
        -30 * x6
        - 90 * x**8
        + _PI2 * (135 * x4 - 96 * x6) / 4 * m2
        + _PI2**2 * (-60 * x2 + 212 * x4) / 16 * m2**2
        + _PI2**3 * (5 - 30 * x2) / 64 * m2**3
    )
    k2 = k**2
    qk = np.exp(-_PI2 / 2 / x2 * k2)  # q'^(k²), all integers k
    root3x = np.sqrt(3) * x
    x = x[:, 0]
    k1 = _SQRT2PI * np.sum(c1 * q, axis=1) / (6 * x**4)
    k2_ = _SQRT2PI * np.sum(c2 * q, axis=1) / (72 * x**7)
    k2_ -= np.sum(k2 * qk, axis=1) * _PI2 * _SQRT2PI / (36 * x**3)
    k3 = _SQRT2PI * np.sum(c3 * q, axis=1) / (6480 * x**10)
    k3_extra = np.sum((root3x + np.pi * k) * (root3x - np.pi * k) * k2 * qk, axis=1)
    k3 += k3_extra * _PI2 * _SQRT2PI / (216 * x**6)
    out[live] -= k1 / np.sqrt(n) + k2_ / n + k3 / n**1.5
    return out
