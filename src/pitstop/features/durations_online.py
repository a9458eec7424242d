"""Windows by duration, online: the stats at each machine's latest reading from the ring buffer of
``OnlineFeatures``, in numpy only (no compiled kernels: the edge agent computes them too). The
semantics are in ``pitstop.features.durations``."""

from __future__ import annotations

import numpy as np

from pitstop.features.spec import parse_duration


def duration_us(labels: tuple[str, ...]) -> np.ndarray:
    return np.array([round(parse_duration(label)[1] * 1e6) for label in labels], np.int64)


def online_duration_stats(
    win: np.ndarray,
    win_ts: np.ndarray,
    valid: np.ndarray,
    durations: np.ndarray,
    cap: int,
    stats: tuple[str, ...],
) -> dict[tuple[int, str], np.ndarray]:
    """The same stats at each machine's latest reading, from its ring (``win``: machines x ring x
    sensors, oldest first; ``win_ts`` their µs; ``valid`` which ring places hold a reading of the
    current episode). Returns (duration index, stat) → (machines, sensors)."""
    ring = win.shape[1]
    latest = win_ts[:, -1]
    newest_first = np.arange(ring)[::-1]
    out: dict[tuple[int, str], np.ndarray] = {}
    for di, d in enumerate(durations):
        inside = valid & (win_ts > (latest - d)[:, None])
        inside[:, : max(0, ring - cap)] = False
        # a contiguous run back from the newest reading
        run = np.cumprod(inside[:, newest_first], axis=1)[:, newest_first].astype(bool)
        m = run.sum(axis=1).astype(np.float64)  # >= 1: the latest reading is always inside
        mask = run[:, :, None]
        mean = np.where(mask, win, 0.0).sum(axis=1) / m[:, None]
        for stat in stats:
            if stat == "mean":
                value = mean
            elif stat == "std":
                value = np.sqrt(np.where(mask, (win - mean[:, None, :]) ** 2, 0.0).sum(axis=1) / m[:, None])
            elif stat == "min":
                value = np.where(mask, win, np.inf).min(axis=1)
            elif stat == "max":
                value = np.where(mask, win, -np.inf).max(axis=1)
            else:
                place = np.arange(ring)[None, :] - (ring - m)[:, None]  # 0 .. m-1 inside the run
                centred = (place - (m[:, None] - 1) / 2.0)[:, :, None]
                num = np.where(mask, centred * (win - mean[:, None, :]), 0.0).sum(axis=1)
                den = (m * (m * m - 1) / 12.0)[:, None]
                value = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
            out[(di, stat)] = value
    return out
