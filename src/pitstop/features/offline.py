"""The offline feature builder: every reading's features over a lake version.

Point-in-time correct: a row's features use only its machine's readings at or before it (in seq
order, within its episode), and the reset events stamped at or before it. The semantics are in
``pitstop.features.spec``; ``OnlineFeatures`` computes the same numbers incrementally.

Polars does the relational work (late readings, episodes from reset events, regimes, ordering);
the per-sensor window arithmetic runs in one compiled pass (``pitstop.features.kernels``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from pitstop.features.regimes import assign_regimes, standardise
from pitstop.features.spec import STATS, FeatureSpec, Regimes, settle

_US_PER_HOUR = 3_600_000_000


def build_features(
    telemetry: pl.DataFrame, spec: FeatureSpec, events: pl.DataFrame | None = None, *, exact: bool = False
) -> pl.DataFrame:
    """Features for every (not late) reading: ``machine_id, ts, seq, episode`` and ``spec.names``,
    sorted by machine and seq. ``events`` (``machine_id, ts, kind``) mark episode resets. Values
    are settled as models see them (``spec.settle``); ``exact`` skips that, for tests."""
    missing = [s for s in spec.inputs if s not in telemetry.columns]
    if missing:
        raise ValueError(f"telemetry lacks columns the feature spec needs: {missing}")
    frame = fill_missing(
        _on_time(telemetry, spec).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))), spec
    )
    frame = _episodes(frame, spec, events)
    frame = normalise(frame, spec).sort("machine_id", "episode", "seq")
    return frame.select("machine_id", "ts", "seq", "episode").hstack(_features(frame, spec, exact))


def _on_time(telemetry: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Drop late readings: those arriving (bus order, then seq) after a higher seq of their machine."""
    cols = ["machine_id", "ts", "seq", *spec.inputs]
    if "bus_position" not in telemetry.columns:
        return telemetry.select(cols).sort("machine_id", "seq")
    ordered = telemetry.select(*cols, "bus_position").sort(
        "machine_id", "bus_position", "seq", nulls_last=False
    )
    seen = pl.col("seq").cum_max().shift(1).over("machine_id")
    return (
        ordered.filter(seen.is_null() | (pl.col("seq") > seen)).drop("bus_position").sort("machine_id", "seq")
    )


def _episodes(frame: pl.DataFrame, spec: FeatureSpec, events: pl.DataFrame | None) -> pl.DataFrame:
    """``episode`` (resets at or before the reading) and ``_start`` (µs the episode began)."""
    frame = frame.with_columns(pl.col("ts").first().over("machine_id").alias("_first"))  # by seq
    first = pl.col("_first")
    if events is None or events.height == 0 or not spec.reset_events:
        return frame.with_columns(pl.lit(0, pl.Int64).alias("episode"), first.alias("_start")).drop("_first")
    resets = (
        events.filter(pl.col("kind").is_in(list(spec.reset_events)))
        .select("machine_id", pl.col("ts").cast(pl.Datetime("us", "UTC")).alias("_reset"))
        .drop_nulls()
        .unique()
        .sort("machine_id", "_reset")
        .with_columns(pl.int_range(1, pl.len() + 1).over("machine_id").alias("episode"))
    )
    joined = frame.sort("machine_id", "ts").join_asof(
        resets,
        left_on="ts",
        right_on="_reset",
        by="machine_id",
        strategy="backward",
        allow_exact_matches=False,  # a reset takes effect after its timestamp
        check_sortedness=False,
    )
    return (
        joined.with_columns(
            pl.col("episode").fill_null(0),
            pl.coalesce(pl.col("_reset"), first).alias("_start"),
        )
        .drop("_reset", "_first")
        .sort("machine_id", "seq")
    )


def fill_missing(frame: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Missing inputs as the machine's last value, else the spec's fill value (a no-op without
    one). ``frame`` is sorted by machine and seq, late readings dropped."""
    if spec.fill is None:
        return frame
    return frame.with_columns(
        pl.col(name).cast(pl.Float64).forward_fill().over("machine_id").fill_null(value)
        for name, value in zip(spec.inputs, spec.fill, strict=True)
    )


def fit_fill(telemetry: pl.DataFrame, spec: FeatureSpec, optional: set[str] | None = None) -> FeatureSpec:
    """The spec with fill values (each input's median) when an input has missing values in
    ``telemetry`` or is ``optional``; else without."""
    inputs = spec.inputs
    nulls = telemetry.select(pl.col(inputs).cast(pl.Float64).fill_nan(None).null_count()).row(0)
    if not any(nulls) and not (optional or set()) & set(inputs):
        return replace(spec, fill=None)
    medians = telemetry.select(pl.col(inputs).cast(pl.Float64).median()).row(0)
    return replace(spec, fill=tuple(float(m) if m is not None else 0.0 for m in medians))


def detect_regimes(telemetry: pl.DataFrame, settings: list[str], seed: int = 0, most: int = 8) -> int:
    """How many discrete operating regimes the ``settings`` columns show: the fewest k-means
    clusters (k <= ``most``) that leave under 5% of the settings' variance within clusters; 0
    when the settings vary continuously (no k does) or do not vary."""
    if not settings or telemetry.height == 0:
        return 0
    x = telemetry.select(pl.col(settings).cast(pl.Float64)).drop_nulls().to_numpy()
    if len(x) > 20_000:
        x = x[np.random.default_rng(seed).choice(len(x), 20_000, replace=False)]
    scale = x.std(axis=0)
    if len(x) < 10 or not (scale > 0).any():
        return 0
    z = x[:, scale > 0] / scale[scale > 0]
    total = ((z - z.mean(axis=0)) ** 2).sum()
    distinct = len(np.unique(np.round(z, 6), axis=0))
    for k in range(2, min(most, distinct) + 1):
        centroids = _kmeans(z, k, np.random.default_rng(seed))
        within = ((z - centroids[assign_regimes(z, centroids)]) ** 2).sum()
        if within < 0.05 * total:
            return k
    return 0


def _kmeans(z: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 50) -> np.ndarray:
    centroids = z[rng.choice(len(z), size=1)]
    while len(centroids) < k:  # k-means++ seeding
        d = ((z[:, None, :] - centroids[None]) ** 2).sum(axis=2).min(axis=1)
        centroids = np.vstack([centroids, z[rng.choice(len(z), p=d / d.sum())]])
    for _ in range(iterations):
        label = assign_regimes(z, centroids)
        moved = np.vstack(
            [z[label == j].mean(axis=0) if (label == j).any() else centroids[j] for j in range(k)]
        )
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return centroids


def normalise(frame: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Standardise sensors by their operating regime (a no-op without fitted regimes)."""
    r = spec.regimes
    if r is None:
        return frame
    values = standardise(frame.select(spec.sensors).to_numpy(), frame.select(r.settings).to_numpy(), r)
    return frame.with_columns(pl.Series(s, values[:, i]) for i, s in enumerate(spec.sensors))


def fit_regimes(
    telemetry: pl.DataFrame, spec: FeatureSpec, seed: int = 0, iterations: int = 50
) -> FeatureSpec:
    """The spec with regimes fitted on ``telemetry``: k-means over the settings (deterministic for a
    seed), then each sensor's mean and std per regime. Without ``regime_count`` it is returned as is."""
    if not spec.regime_count:
        return spec.with_regimes(None)
    if spec.fill is not None:
        telemetry = fill_missing(telemetry.sort("machine_id", "seq"), spec)
    x = telemetry.select(spec.regime_settings).to_numpy().astype(np.float64)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = x / scale
    rng = np.random.default_rng(seed)
    k = min(spec.regime_count, len(np.unique(z, axis=0)))
    centroids = _kmeans(z, k, rng, iterations) * scale
    label = assign_regimes(x, centroids)
    values = telemetry.select(spec.sensors).to_numpy().astype(np.float64)
    mean = np.vstack([np.nanmean(values[label == j], axis=0) for j in range(k)])
    std = np.vstack([np.nanstd(values[label == j], axis=0) for j in range(k)])
    mean[~np.isfinite(mean)] = 0.0
    std[~(std > 0)] = 1.0  # a constant sensor in a regime: centred, not scaled
    rows = lambda a: tuple(tuple(float(v) for v in row) for row in a)  # noqa: E731
    return spec.with_regimes(Regimes(spec.regime_settings, rows(centroids), rows(mean), rows(std)))


def _features(frame: pl.DataFrame, spec: FeatureSpec, exact: bool) -> pl.DataFrame:
    """The feature columns (``spec.names``) of ``frame``, sorted by machine, episode and seq: the
    per-sensor ones from the compiled kernel (``pitstop.features.kernels``), in one pass."""
    from pitstop.features import kernels

    n = frame.height
    key = frame.select(pl.struct("machine_id", "episode").rle_id()).to_series().to_numpy()
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, n])
    idx = np.arange(n) - np.repeat(starts, lengths)  # index in the episode

    x = np.ascontiguousarray(frame.select(pl.col(spec.sensors).cast(pl.Float64)).to_numpy(order="fortran").T)
    names = [f"{s}__{f}" for s in spec.sensors for f in spec.per_sensor]
    out = np.empty((len(names), n))
    if n:
        kernels.window_features(
            x,
            starts.astype(np.int64),
            lengths.astype(np.int64),
            np.array([*spec.windows, spec.drift_window], np.int64),
            np.array([kernels.STATS.index(stat) for stat in spec.stats], np.int64),
            np.array(spec.ewma_alphas, np.float64),
            spec.delta,
            spec.baseline_readings,
            not exact,
            out,
        )
    columns = {"age": idx + 1.0}
    if spec.hours_since_reset:
        hours = (frame["ts"] - frame["_start"]).dt.total_microseconds().to_numpy() / _US_PER_HOUR
        columns["hours_since_reset"] = hours if exact else settle(hours)
    computed = {name: out[j] for j, name in enumerate(names)}
    if spec.durations:
        computed |= _duration_features(frame, spec, x, starts, lengths, exact)
    columns |= {name: computed[name] for name in spec.names[len(columns) :]}
    return pl.DataFrame(columns)


def _duration_features(
    frame: pl.DataFrame,
    spec: FeatureSpec,
    x: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    exact: bool,
) -> dict[str, np.ndarray]:
    from pitstop.features import durations

    labels = [f"{s}__{stat}_{d}" for s in spec.sensors for d in spec.durations for stat in spec.stats]
    out = np.empty((len(labels), frame.height))
    if frame.height:
        durations.duration_features(
            x,
            frame["ts"].dt.epoch("us").to_numpy().astype(np.int64),
            starts.astype(np.int64),
            lengths.astype(np.int64),
            durations.duration_us(spec.durations),
            spec.duration_max_readings,
            np.array([STATS.index(stat) for stat in spec.stats], np.int64),
            not exact,
            out,
        )
    return {name: out[j] for j, name in enumerate(labels)}
