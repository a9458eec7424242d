"""The compiled kernel behind ``build_features``: every per-sensor feature of every reading, one pass.

Vectorised Polars expressions cost a full pass over memory per operation, and a spec of a dozen
window stats needs dozens of them; this kernel walks each (sensor, episode) once and writes every
feature of a row together, in parallel over (sensor, episode) pairs. It computes what
``OnlineFeatures.get`` computes (the semantics are in ``pitstop.features.spec``): means and slopes
from running window sums of ``x - first`` (recomputed afresh every ``REFRESH`` readings, so the
rounding they carry stays bounded), stds two-pass over the window, min and max over the window.

Compiled by Numba on first use and cached on disk; ``OMP_WAIT_POLICY=PASSIVE`` keeps its idle
threads from spinning on a shared machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from numba import njit, prange

from pitstop.features.spec import SNAP, STATS

REFRESH = 4096
MEAN, STD, MIN, MAX, SLOPE = (STATS.index(s) for s in ("mean", "std", "min", "max", "slope"))


@njit(inline="always", cache=True)
def _put(out: np.ndarray, j: int, row: int, v: float, settle: bool) -> None:
    if settle:  # spec.settle: |v| < SNAP is 0, the rest rounded to float32 precision
        v = 0.0 if abs(v) < SNAP else np.float64(np.float32(v))
    out[j, row] = v


@njit(parallel=True, cache=True, nogil=True)
def window_features(
    x: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    windows: np.ndarray,
    stats: np.ndarray,
    alphas: np.ndarray,
    delta: bool,
    baseline: int,
    settle: bool,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through build_features
    """Fill ``out`` (sensors x per-sensor features, rows): for sensor ``s`` the rows
    ``s * P .. s * P + P - 1`` hold ``spec.per_sensor`` in order.

    ``x`` is (sensors, rows), sorted by machine, episode and seq; ``starts``/``lengths`` delimit
    the episodes. ``windows`` are the spec's windows followed by its drift window; ``stats`` are
    indices into ``STATS``.
    """
    sensors = x.shape[0]
    per = out.shape[0] // sensors
    groups = len(starts)
    nw = len(windows) - 1
    for task in prange(sensors * groups):
        s = task // groups
        a = starts[task % groups]
        xs = x[s]
        first = xs[a]
        base_sum = 0.0
        ewma = np.empty(len(alphas))
        s1 = np.zeros(nw + 1)  # Σ c over each window, c = x - first
        t1 = np.zeros(nw + 1)  # Σ (q - lo) c over each window, q - lo the place in the window
        for r in range(lengths[task % groups]):
            row = a + r
            v = xs[row]
            c = v - first
            for wi in range(nw + 1):
                w = windows[wi]
                m = min(r + 1, w)
                if r < w:  # the window grows
                    s1[wi] += c
                    t1[wi] += (m - 1) * c
                elif r % REFRESH == 0:  # afresh now and then
                    lo = row - w + 1
                    s1[wi] = 0.0
                    t1[wi] = 0.0
                    for q in range(lo, row + 1):
                        s1[wi] += xs[q] - first
                        t1[wi] += (q - lo) * (xs[q] - first)
                else:  # the window slides by one
                    old = xs[row - w] - first
                    t1[wi] = t1[wi] - (s1[wi] - old) + (m - 1) * c
                    s1[wi] = s1[wi] - old + c
            j = s * per
            _put(out, j, row, v, settle)
            j += 1
            if delta:
                _put(out, j, row, v - xs[row - 1] if r > 0 else 0.0, settle)
                j += 1
            for wi in range(nw):
                w = windows[wi]
                m = min(r + 1, w)
                lo = row - m + 1
                mean = first + s1[wi] / m
                for stat in stats:
                    if stat == MEAN:
                        val = mean
                    elif stat == STD:
                        ss = 0.0
                        for q in range(lo, row + 1):
                            d = xs[q] - mean
                            ss += d * d
                        val = np.sqrt(ss / m)
                    elif stat == MIN:
                        val = xs[lo]
                        for q in range(lo + 1, row + 1):
                            val = min(val, xs[q])
                    elif stat == MAX:
                        val = xs[lo]
                        for q in range(lo + 1, row + 1):
                            val = max(val, xs[q])
                    else:  # least-squares slope: Σ (q - q̄)(c - c̄) / Σ (q - q̄)²
                        val = 0.0
                        if m > 1:
                            val = (t1[wi] - (m - 1) / 2.0 * s1[wi]) / (m * (m * m - 1) / 12.0)
                    _put(out, j, row, val, settle)
                    j += 1
            for ai in range(len(alphas)):
                ewma[ai] = v if r == 0 else alphas[ai] * v + (1.0 - alphas[ai]) * ewma[ai]
                _put(out, j, row, ewma[ai], settle)
                j += 1
            if r < baseline:
                base_sum += c
            recent = s1[nw] / min(r + 1, windows[nw])
            _put(out, j, row, recent - base_sum / min(r + 1, baseline), settle)
