"""Online features: per-machine incremental state, updated a micro-batch at a time.

State lives in arrays indexed by a machine's slot (a ring buffer of its last readings, episode
counters, baseline sums, EWMAs), so one ``update`` costs a handful of numpy operations over the
whole batch whatever the number of machines, and ``get`` computes the features of many machines at
once. ``snapshot``/``restore`` save and load the state so that a restarted processor resumes from
it instead of rereading the lake. The semantics (and ``build_features``, their offline twin) are
in ``pitstop.features.spec``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pitstop.features.durations_online import duration_us, online_duration_stats
from pitstop.features.regimes import standardise
from pitstop.features.spec import FeatureSpec, settle

_US_PER_HOUR = 3_600_000_000
_GET_CHUNK = 2048
# rows advanced at a time (whole machines): a large batch's temporaries (rows × sensors × alphas)
# would be tens of MB, each mapped fresh from the OS and faulted in page by page
ADVANCE_ROWS = 16_384
# chunks of a large ``get`` run on this many threads (numpy leaves the GIL in its array loops)
_GET_THREADS = max(1, min(4, os.cpu_count() or 1))
_get_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _get_pool
    if _get_pool is None:
        _get_pool = ThreadPoolExecutor(_GET_THREADS, thread_name_prefix="features-get")
    return _get_pool


_ARRAYS = (
    "count",
    "episode",
    "start",
    "last_seq",
    "last_ts",
    "first",
    "base_sum",
    "base_n",
    "ewma",
    "buf",
    "held",
    "buf_ts",
)


class OnlineFeatures:
    """Incremental features for a fleet; equal to ``build_features`` at every machine's latest reading."""

    def __init__(self, spec: FeatureSpec, capacity: int = 64) -> None:
        self.spec = spec
        self.window = spec.max_window
        self._s = len(spec.sensors)
        self._alphas = np.asarray(spec.ewma_alphas, dtype=np.float64)
        self.slots: dict[str, int] = {}
        self.pending: dict[str, list[int]] = {}  # reset events (µs) not yet reached by a reading
        self._alloc(capacity)

    # -- state -------------------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        s, a, w = self._s, len(self._alphas), self.window
        self.count = np.zeros(capacity, np.int64)  # readings in the current episode
        self.episode = np.zeros(capacity, np.int64)
        self.start = np.full(capacity, -1, np.int64)  # µs the episode began; -1 until known
        self.last_seq = np.full(capacity, -1, np.int64)
        self.last_ts = np.zeros(capacity, np.int64)
        self.first = np.zeros((capacity, s))  # the episode's first value, to centre on
        self.base_sum = np.zeros((capacity, s))
        self.base_n = np.zeros(capacity, np.int64)
        self.ewma = np.zeros((capacity, s, a))
        self.buf = np.zeros((capacity, w, s))
        self.buf_ts = np.zeros((capacity, w if self.spec.durations else 1), np.int64)  # µs, by time
        # each input's last value (spec.fill): what a missing one is taken as; NaN until seen
        self.held = np.full((capacity, len(self.spec.inputs)), np.nan)

    def _grow(self, needed: int) -> None:
        capacity = len(self.count)
        if needed <= capacity:
            return
        old = {name: getattr(self, name) for name in _ARRAYS}
        self._alloc(max(needed, 2 * capacity))
        for name, values in old.items():
            getattr(self, name)[:capacity] = values

    def _slot(self, machine_id: str) -> int:
        slot = self.slots.get(machine_id)
        if slot is None:
            slot = self.slots[machine_id] = len(self.slots)
            self._grow(slot + 1)
        return slot

    def __contains__(self, machine_id: str) -> bool:
        return machine_id in self.slots

    def __len__(self) -> int:
        return len(self.slots)

    def last_seen(self, machine_id: str) -> int:
        """The highest seq used for the machine's features (-1 if none)."""
        slot = self.slots.get(machine_id)
        return -1 if slot is None else int(self.last_seq[slot])

    def readings(self, machine_id: str) -> int:
        """Readings in the machine's current episode."""
        slot = self.slots.get(machine_id)
        return 0 if slot is None else int(self.count[slot])

    # -- updates -----------------------------------------------------------------------------
    def reset(self, machine_id: str, ts_us: int) -> None:
        """A reset event (maintenance, failure): its episode starts at the first reading after it."""
        self._slot(machine_id)
        pending = self.pending.setdefault(machine_id, [])
        pending.append(int(ts_us))
        pending.sort()

    def update(
        self,
        machine_ids: Sequence[str] | np.ndarray,
        seqs: np.ndarray,
        ts_us: np.ndarray,
        values: np.ndarray,
    ) -> np.ndarray:
        """Add a micro-batch: rows grouped by machine, in arrival order within each, ``values`` shaped
        (rows, ``spec.inputs``). Returns the mask of rows used (the others were late)."""
        ids = np.asarray(machine_ids, dtype=object)
        seqs = np.asarray(seqs, np.int64)
        ts_us = np.asarray(ts_us, np.int64)
        n = len(ids)
        keep = np.zeros(n, bool)
        if n == 0:
            return keep
        bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
        seg_starts, seg_ends = bounds[:-1], bounds[1:]
        slot_of_seg = np.array([self._slot(str(ids[i])) for i in seg_starts], np.int64)
        seg = np.repeat(np.arange(len(seg_starts)), seg_ends - seg_starts)
        slot = slot_of_seg[seg]
        # on time: above every seq seen before, for the machine (arrival order)
        seen = np.maximum(self.last_seq[slot], _segment_cummax_before(seqs, seg))
        keep = seqs > seen
        if not keep.all():
            seqs, ts_us, values, slot = seqs[keep], ts_us[keep], values[keep], slot[keep]
        if len(seqs) == 0:
            return keep
        x = self._normalise(self._fill(slot, np.asarray(values, np.float64)))
        rounds = self._rounds(slot, ts_us)
        for r in range(int(rounds.max()) + 1):
            if r > 0:
                self._apply_resets(slot, rounds, r)
            mask = rounds == r
            if mask.any():
                self._advance(slot[mask], seqs[mask], ts_us[mask], x[mask])
        return keep

    def _fill(self, slot: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Missing values as the machine's last value of the input, else the spec's fill (rows
        grouped by machine, in seq order). Remembers each machine's last values."""
        fill = self.spec.fill
        if fill is None:
            return values
        n = len(slot)
        bounds = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1], True])
        starts, ends = bounds[:-1], bounds[1:]
        seg_start = np.repeat(starts, ends - starts)
        missing = np.isnan(values)
        if missing.any():
            values = values.copy()
            rows = np.arange(n)
            for j in np.flatnonzero(missing.any(axis=0)):
                col = values[:, j]
                last = np.maximum.accumulate(np.where(~missing[:, j], rows, -1))
                carried = np.where(last >= seg_start, col[np.maximum(last, 0)], self.held[slot, j])
                values[:, j] = np.where(np.isnan(carried), fill[j], carried)
        self.held[slot[ends - 1]] = values[ends - 1]
        return values

    def _normalise(self, values: np.ndarray) -> np.ndarray:
        r = self.spec.regimes
        sensors = values[:, : self._s]
        return sensors if r is None else standardise(sensors, values[:, self._s :], r)

    def _rounds(self, slot: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
        """Per row: how many pending resets come before it in this batch (0 for almost every row)."""
        rounds = np.zeros(len(slot), np.int64)
        if not self.pending:
            return rounds
        for machine_id, resets in self.pending.items():
            rows = np.flatnonzero(slot == self.slots[machine_id])
            if len(rows):
                # resets strictly before a reading's ts come before it (a reset takes effect after its ts)
                rounds[rows] = np.searchsorted(np.asarray(resets), ts_us[rows], side="left")
        return rounds

    def _apply_resets(self, slot: np.ndarray, rounds: np.ndarray, r: int) -> None:
        for machine_id in list(self.pending):
            s = self.slots[machine_id]
            rows = slot == s
            if not rows.any() or rounds[rows].max() < r:
                continue
            reset_ts = self.pending[machine_id][r - 1]
            self.count[s] = 0
            self.episode[s] += 1
            self.start[s] = reset_ts
            self.base_sum[s] = 0.0
            self.base_n[s] = 0
            if rounds[rows].max() == r:  # the last reset this batch reaches for the machine
                self.pending[machine_id] = self.pending[machine_id][r:]
                if not self.pending[machine_id]:
                    del self.pending[machine_id]

    def _advance(self, slot: np.ndarray, seqs: np.ndarray, ts_us: np.ndarray, x: np.ndarray) -> None:
        """Rows grouped by machine (one contiguous segment each), in seq order; about
        ``ADVANCE_ROWS`` at a time (a machine's rows only change its own state)."""
        if len(slot) <= ADVANCE_ROWS:
            self._advance_rows(slot, seqs, ts_us, x)
            return
        starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        for lo, hi in group_spans(starts, len(slot), ADVANCE_ROWS):
            self._advance_rows(slot[lo:hi], seqs[lo:hi], ts_us[lo:hi], x[lo:hi])

    def _advance_rows(self, slot: np.ndarray, seqs: np.ndarray, ts_us: np.ndarray, x: np.ndarray) -> None:
        bounds = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1], True])
        starts, ends = bounds[:-1], bounds[1:]
        lengths = ends - starts
        sl = slot[starts]
        seg = np.repeat(np.arange(len(starts)), lengths)
        rank = np.arange(len(slot)) - starts[seg]
        fresh = self.count[sl] == 0
        if fresh.any():
            self.first[sl[fresh]] = x[starts[fresh]]
            unknown = fresh & (self.start[sl] < 0)
            self.start[sl[unknown]] = ts_us[starts[unknown]]
        index = self.count[sl][seg] + rank  # each row's index in its episode
        centred = x - self.first[slot]

        k = self.spec.baseline_readings
        early = index < k
        if early.any():
            self.base_sum[sl] += np.add.reduceat(np.where(early[:, None], centred, 0.0), starts, axis=0)
            self.base_n[sl] += np.add.reduceat(early.astype(np.int64), starts)

        if len(self._alphas):
            e0 = self.ewma[sl]  # (segments, sensors, alphas)
            e0[fresh] = x[starts[fresh]][:, :, None]  # y = x at an episode's first reading
            decay = 1.0 - self._alphas  # (alphas,)
            power = (lengths[seg] - 1 - rank)[:, None]  # rows after this one in its segment
            weights = self._alphas[None, :] * decay[None, :] ** power  # (rows, alphas)
            summed = np.add.reduceat(x[:, :, None] * weights[:, None, :], starts, axis=0)
            self.ewma[sl] = decay[None, None, :] ** lengths[:, None, None] * e0 + summed

        w = self.window
        tail = rank >= (lengths[seg] - w)  # only the last w rows of a segment stay in the ring
        self.buf[slot[tail], index[tail] % w] = x[tail]
        if self.spec.durations:
            self.buf_ts[slot[tail], index[tail] % w] = ts_us[tail]
        self.count[sl] += lengths
        self.last_seq[sl] = seqs[ends - 1]
        self.last_ts[sl] = ts_us[ends - 1]

    # -- features ----------------------------------------------------------------------------
    def get(self, machine_ids: Sequence[str], exact: bool = False) -> np.ndarray:
        """Feature matrix (machines, ``spec.names``) at each machine's latest reading, settled as
        models see it (``spec.settle``); ``exact`` skips that, for tests. Many machines are taken
        ``_GET_CHUNK`` at a time: the temporaries then stay in cache (3.5x faster for 10,000), and
        the chunks run on a few threads (each chunk's rows are computed as alone, so the matrix is
        the same). The state must not change during the call (the processor's own thread calls it)."""
        if len(machine_ids) > _GET_CHUNK:
            chunks = [machine_ids[i : i + _GET_CHUNK] for i in range(0, len(machine_ids), _GET_CHUNK)]
            if _GET_THREADS == 1:
                return np.concatenate([self.get(chunk, exact) for chunk in chunks])
            return np.concatenate(list(_pool().map(lambda chunk: self.get(chunk, exact), chunks)))
        spec = self.spec
        s = np.array([self.slots[m] for m in machine_ids], np.int64)
        if len(s) and (self.count[s] < 1).any():
            empty = [m for m, c in zip(machine_ids, self.count[s], strict=True) if c < 1]
            raise KeyError(f"no readings yet in the current episode of {', '.join(empty[:5])}")
        c = self.count[s]
        w_all = self.window
        offsets = c[:, None] - w_all + np.arange(w_all)[None, :]  # episode index of each ring column
        valid = offsets >= 0
        win = self.buf[s[:, None], offsets % w_all]  # (machines, window, sensors), oldest first
        first = self.first[s]
        cols: list[np.ndarray] = [c.astype(np.float64)[:, None]]
        if spec.hours_since_reset:
            cols.append(((self.last_ts[s] - self.start[s]) / _US_PER_HOUR)[:, None])
        per: dict[str, np.ndarray] = {"last": win[:, -1]}
        if spec.delta:
            per["delta"] = np.where((c >= 2)[:, None], win[:, -1] - win[:, -2], 0.0)
        # sums over the newest w values for every window at once: cumulative sums from the newest
        centred = np.where(valid[:, :, None], win - first[:, None, :], 0.0)
        newest = np.cumsum(centred[:, ::-1], axis=1)  # [:, j]: Σ c over the newest j + 1 values
        place = np.arange(w_all, dtype=np.float64)[None, :, None]
        if "slope" in spec.stats:
            placed = np.cumsum((centred * place)[:, ::-1], axis=1)  # Σ q·c likewise, q the ring column
        for w in spec.windows:
            sub, v = win[:, w_all - w :], valid[:, w_all - w :, None]
            n = np.minimum(c, w).astype(np.float64)[:, None]
            s1 = newest[:, w - 1]
            mean = first + s1 / n
            for stat in spec.stats:
                if stat == "mean":
                    per[f"mean_{w}"] = mean
                elif stat == "std":
                    per[f"std_{w}"] = np.sqrt((np.where(v, sub - mean[:, None], 0.0) ** 2).sum(axis=1) / n)
                elif stat == "min":
                    per[f"min_{w}"] = np.where(v, sub, np.inf).min(axis=1)
                elif stat == "max":
                    per[f"max_{w}"] = np.where(v, sub, -np.inf).max(axis=1)
                elif stat == "slope":
                    # Σ (q − q̄)(c − c̄) = Σ q·c − q̄·Σ c, the valid ones being the newest n columns
                    q_mean = (w_all - 1) - (n - 1) / 2
                    sxx = n * (n * n - 1) / 12
                    sxy = placed[:, w - 1] - q_mean * s1
                    per[f"slope_{w}"] = np.where(n > 1, sxy / np.where(n > 1, sxx, 1.0), 0.0)
        for i, a in enumerate(spec.ewma_alphas):
            per[f"ewma_{a:g}"] = self.ewma[s, :, i]
        d = spec.drift_window
        recent = newest[:, d - 1] / np.minimum(c, d)[:, None]
        per["drift"] = recent - self.base_sum[s] / self.base_n[s][:, None]
        if spec.durations:
            win_ts = self.buf_ts[s[:, None], offsets % w_all]
            found = online_duration_stats(
                win, win_ts, valid, duration_us(spec.durations), spec.duration_max_readings, spec.stats
            )
            for (di, stat), value in found.items():
                per[f"{stat}_{spec.durations[di]}"] = value
        stacked = np.stack([per[f] for f in spec.per_sensor], axis=2)  # (machines, sensors, per-sensor)
        cols.append(stacked.reshape(len(s), -1))
        out = np.concatenate(cols, axis=1)
        return out if exact else np.asarray(settle(out))

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self, extra: dict[str, Any] | None = None) -> bytes:
        """The whole state as bytes (numpy ``.npz``), tagged with the spec hash; ``extra`` (JSON)
        travels with it."""
        n = len(self.slots)
        meta = {"spec": self.spec.hash, "machines": list(self.slots), "pending": self.pending, "extra": extra}
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {name: getattr(self, name)[:n] for name in _ARRAYS}
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        return buffer.getvalue()

    @classmethod
    def restore(cls, spec: FeatureSpec, data: bytes) -> tuple[OnlineFeatures, Any]:
        """State saved by ``snapshot`` under the same spec (a different spec is a ``ValueError``),
        and the ``extra`` saved with it."""
        with np.load(io.BytesIO(data)) as npz:
            meta = json.loads(npz["meta"].tobytes())
            if meta["spec"] != spec.hash:
                raise ValueError(f"snapshot is for feature spec {meta['spec']}, not {spec.hash}")
            online = cls(spec, capacity=max(64, len(meta["machines"])))
            for name in _ARRAYS:
                if name not in npz.files:  # saved before the array existed: its initial value
                    continue
                values = npz[name]
                getattr(online, name)[: len(values)] = values
        online.slots = {m: i for i, m in enumerate(meta["machines"])}
        online.pending = {m: list(v) for m, v in meta["pending"].items()}
        return online, meta.get("extra")


def group_spans(starts: np.ndarray, n: int, size: int) -> list[tuple[int, int]]:
    """Row ranges ``[lo, hi)`` of whole groups, about ``size`` rows each (a group larger than
    that alone), for ``n`` rows grouped in order: ``starts`` is each group's first row."""
    spans = []
    lo = 0
    while lo < n:
        hi = n
        if lo + size < n:
            hi = int(starts[np.searchsorted(starts, lo + size, side="right") - 1])
            if hi <= lo:  # one group longer than size: it alone
                after = int(np.searchsorted(starts, lo, side="right"))
                hi = int(starts[after]) if after < len(starts) else n
        spans.append((lo, hi))
        lo = hi
    return spans


def _segment_cummax_before(seqs: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """For each row, the highest seq of the rows before it in its segment (-1 for the first)."""
    before = np.r_[-1, seqs[:-1]]
    heads = np.r_[True, seg[1:] != seg[:-1]]
    before[heads] = -1
    if (seqs[1:][~heads[1:]] > seqs[:-1][~heads[1:]]).all():
        return before  # increasing within every segment (the usual case): the previous row's seq
    out = before.copy()
    bounds = np.r_[np.flatnonzero(heads), len(seqs)]
    for a, b in itertools.pairwise(bounds):
        out[a + 1 : b] = np.maximum.accumulate(seqs[a : b - 1])
    return out
