"""Windows by duration ("24h"): the stats of a machine's readings over the last stretch of time.

The window of a reading is the run of its episode's readings, going back from it in seq order,
stamped within the duration before it (``ts > t - D``), and at most ``duration_max_readings`` of
them (the newest): a device that reports every second cannot make a window unbounded. The stats
are those of count windows (``mean``, population ``std``, ``min``, ``max``, and ``slope``: the
least-squares change per reading). Offline, a compiled pass per (sensor, episode); online, from the
same ring buffer as the count windows, which holds the readings' timestamps too.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from numba import njit, prange

from pitstop.features.durations_online import duration_us, online_duration_stats
from pitstop.features.kernels import _put
from pitstop.features.spec import STATS

__all__ = ["duration_features", "duration_us", "online_duration_stats"]

MEAN, STD, MIN, MAX, SLOPE = (STATS.index(s) for s in ("mean", "std", "min", "max", "slope"))


@njit(parallel=True, cache=True, nogil=True)
def duration_features(
    x: np.ndarray,
    ts: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    durations: np.ndarray,
    cap: int,
    stats: np.ndarray,
    settle: bool,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through build_features
    """Fill ``out`` (sensors x durations x stats, rows) for rows sorted by machine, episode and seq
    (``x`` is (sensors, rows), ``ts`` the rows' µs)."""
    sensors = x.shape[0]
    groups = len(starts)
    per = len(durations) * len(stats)
    for task in prange(sensors * groups):
        s = task // groups
        a = starts[task % groups]
        xs = x[s]
        for r in range(lengths[task % groups]):
            row = a + r
            for di in range(len(durations)):
                m = 0
                while m < cap and m <= r and ts[row - m] > ts[row] - durations[di]:
                    m += 1
                lo = row - m + 1
                total = 0.0
                for q in range(lo, row + 1):
                    total += xs[q]
                mean = total / m
                for k in range(len(stats)):
                    stat = stats[k]
                    if stat == MEAN:
                        val = mean
                    elif stat == STD:
                        ss = 0.0
                        for q in range(lo, row + 1):
                            ss += (xs[q] - mean) ** 2
                        val = np.sqrt(ss / m)
                    elif stat == MIN:
                        val = xs[lo]
                        for q in range(lo + 1, row + 1):
                            val = min(val, xs[q])
                    elif stat == MAX:
                        val = xs[lo]
                        for q in range(lo + 1, row + 1):
                            val = max(val, xs[q])
                    else:
                        val = 0.0
                        if m > 1:
                            num = 0.0
                            for q in range(lo, row + 1):
                                num += ((q - lo) - (m - 1) / 2.0) * (xs[q] - mean)
                            val = num / (m * (m * m - 1) / 12.0)
                    _put(out, s * per + di * len(stats) + k, row, val, settle)
