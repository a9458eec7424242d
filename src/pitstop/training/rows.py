"""The rows a large training set is fitted on: a weighted, seeded sample, built machine by machine.

Up to ``MAX_TRAIN_ROWS`` labelled rows every row is used, as always. Beyond, the boosters are fit
on a sample of about that many rows, and the feature matrix of every row is never held at once:

- Consecutive readings are near copies (a harvester reads every ~10 minutes; its RUL is hours
  to months), so a thinned history teaches nearly what the whole one does, at a fraction of the
  boosting time and memory. Every machine keeps its share: the sample is drawn per row, not per
  machine, so the grouped folds still hold every machine.
- Two strata by label: the degradation tail (RUL below the cap) and the healthy plateau (RUL at
  the cap). The tail keeps up to ``TAIL_SHARE`` of the budget at one rate; the plateau is
  sampled at a rate no higher than the tail's, with at least the rest of the budget. Each kept
  row weighs ``1 / rate``, so the training loss is the full set's in expectation.
- The draw is seeded by the training seed and the machine (a machine's rows are drawn alike
  whatever other machines are in the set), so the same data, spec, seed and ``max_rows`` give
  the same rows, and the same model.
- Features are computed for a group of machines at a time (``CHUNK_READINGS`` readings), and
  only the sampled rows are kept: a row's features depend only on its machine's readings and
  events (``labelled_rows``), so the kept rows are exactly the full computation's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from pitstop.features import FeatureSpec, build_features
from pitstop.training.labels import rul_labels

MAX_TRAIN_ROWS = 300_000
TAIL_SHARE = 0.8
CHUNK_READINGS = 500_000


@dataclass(frozen=True)
class Rates:
    """The sampling rate of the degradation tail and of the healthy plateau."""

    tail: float
    plateau: float

    def of(self, rul: np.ndarray, cap: float | None) -> np.ndarray:
        if cap is None:
            return np.full(len(rul), self.tail)
        return np.where(rul >= cap, self.plateau, self.tail)


def sample_rates(rul: np.ndarray, cap: float | None, budget: int) -> Rates | None:
    """The rates that keep about ``budget`` of the labelled rows ``rul`` (capped); None when
    they all fit."""
    if len(rul) <= budget:
        return None
    plateau = int((rul >= cap).sum()) if cap is not None else 0
    tail = len(rul) - plateau
    if plateau == 0:
        return Rates(budget / tail, 1.0)
    if tail == 0:
        return Rates(1.0, budget / plateau)
    tail_rate = min(1.0, TAIL_SHARE * budget / tail)
    plateau_rate = min(tail_rate, max(budget - tail_rate * tail, (1 - TAIL_SHARE) * budget) / plateau)
    return Rates(tail_rate, plateau_rate)


def draws(machines: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) for each row of ``machines`` (grouped by machine, in seq order),
    seeded by ``seed`` and the machine: a machine's draws do not depend on the others."""
    out = np.empty(len(machines))
    starts = np.flatnonzero(np.r_[True, machines[1:] != machines[:-1]])
    ends = np.r_[starts[1:], len(machines)]
    for a, b in zip(starts, ends, strict=True):
        key = zlib.crc32(str(machines[a]).encode())
        out[a:b] = np.random.default_rng([seed, key]).random(b - a)
    return out


@dataclass
class Sampled:
    """The kept labelled rows (``labelled_rows`` columns), their weights, and how many there were."""

    rows: pl.DataFrame
    weight: np.ndarray
    total: int


def label_counts(
    telemetry: pl.DataFrame, events: pl.DataFrame, cap: float, horizon: float, unit_seconds: float | None
) -> np.ndarray:
    """Every labelled reading's capped RUL, from the readings alone (no features): what the rates
    are set from."""
    keys = telemetry.select("machine_id", pl.col("ts").cast(pl.Datetime("us", "UTC")), "seq")
    return rul_labels(keys, events, cap, horizon, unit_seconds)["rul"].to_numpy()


def machine_chunks(telemetry: pl.DataFrame, readings: int = CHUNK_READINGS) -> list[list[str]]:
    """The machines (sorted) in groups of about ``readings`` readings."""
    counts = telemetry.group_by("machine_id").len().sort("machine_id")
    chunks: list[list[str]] = [[]]
    size = 0
    for machine, n in counts.iter_rows():
        if chunks[-1] and size + n > readings:
            chunks.append([])
            size = 0
        chunks[-1].append(machine)
        size += n
    return chunks


def sampled_rows(
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    spec: FeatureSpec,
    cap: float,
    horizon: float,
    unit_seconds: float | None,
    max_rows: int,
    seed: int,
) -> Sampled | None:
    """The labelled rows (features of a fitted ``spec``) of a sample of about ``max_rows``, machine
    group by machine group; None when every labelled row fits (train on them all)."""
    if telemetry.height <= max_rows:
        return None
    rates = sample_rates(label_counts(telemetry, events, cap, horizon, unit_seconds), cap, max_rows)
    if rates is None:
        return None
    kept, weights, total = [], [], 0
    for chunk in machine_chunks(telemetry, CHUNK_READINGS):  # read here: tests lower it
        ids = pl.Series(chunk, dtype=pl.String).implode()
        ev = events.filter(pl.col("machine_id").is_in(ids))
        features = build_features(telemetry.filter(pl.col("machine_id").is_in(ids)), spec, ev)
        rows = rul_labels(features, ev, cap, horizon, unit_seconds)
        del features
        total += rows.height
        rate = rates.of(rows["rul"].to_numpy(), cap)
        keep = draws(rows["machine_id"].to_numpy(), seed) < rate
        kept.append(rows.filter(pl.Series(keep)))
        weights.append(1.0 / rate[keep])
    return Sampled(pl.concat(kept), np.concatenate(weights), total)
