"""The offline feature builder: every reading's features over a lake version, in Polars.

Point-in-time correct: a row's features use only its machine's readings at or before it (in seq
order, within its episode), and the reset events stamped at or before it. The semantics are in
``pitstop.features.spec``; ``OnlineFeatures`` computes the same numbers incrementally.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pitstop.features.spec import FeatureSpec, Regimes, settle

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
    frame = _on_time(telemetry, spec).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    frame = _episodes(frame, spec, events)
    frame = normalise(frame, spec).sort("machine_id", "episode", "seq")
    return frame.select("machine_id", "ts", "seq", "episode").with_columns(_features(frame, spec, exact))


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


def normalise(frame: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Standardise sensors by their operating regime (a no-op without fitted regimes)."""
    r = spec.regimes
    if r is None:
        return frame
    values = standardise(frame.select(spec.sensors).to_numpy(), frame.select(r.settings).to_numpy(), r)
    return frame.with_columns(pl.Series(s, values[:, i]) for i, s in enumerate(spec.sensors))


def standardise(sensors: np.ndarray, settings: np.ndarray, regimes: Regimes) -> np.ndarray:
    """Each row's sensors standardised by the mean and std of its nearest regime."""
    regime = assign_regimes(settings, np.asarray(regimes.centroids))
    return np.asarray((sensors - np.asarray(regimes.mean)[regime]) / np.asarray(regimes.std)[regime])


def assign_regimes(settings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each row of operating settings."""
    d = ((settings[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(d.argmin(axis=1))


def fit_regimes(
    telemetry: pl.DataFrame, spec: FeatureSpec, seed: int = 0, iterations: int = 50
) -> FeatureSpec:
    """The spec with regimes fitted on ``telemetry``: k-means over the settings (deterministic for a
    seed), then each sensor's mean and std per regime. Without ``regime_count`` it is returned as is."""
    if not spec.regime_count:
        return spec.with_regimes(None)
    x = telemetry.select(spec.regime_settings).to_numpy().astype(np.float64)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = x / scale
    rng = np.random.default_rng(seed)
    k = min(spec.regime_count, len(np.unique(z, axis=0)))
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
    centroids = centroids * scale
    label = assign_regimes(x, centroids)
    values = telemetry.select(spec.sensors).to_numpy().astype(np.float64)
    mean = np.vstack([values[label == j].mean(axis=0) for j in range(k)])
    std = np.vstack([values[label == j].std(axis=0) for j in range(k)])
    std[~(std > 0)] = 1.0  # a constant sensor in a regime: centred, not scaled
    rows = lambda a: tuple(tuple(float(v) for v in row) for row in a)  # noqa: E731
    return spec.with_regimes(Regimes(spec.regime_settings, rows(centroids), rows(mean), rows(std)))


def _features(frame: pl.DataFrame, spec: FeatureSpec, exact: bool) -> list[pl.Series]:
    """The feature columns of ``frame`` (sorted by machine, episode and seq).

    Window stats run as Polars rolling expressions over whole columns, all in one parallel select;
    a window then reaches into the previous (machine, episode) group only for a group's first
    N-1 rows, and those few rows are recomputed from their group's head in numpy. Running
    quantities (delta, baseline) are numpy; EWMAs are Polars per group.
    """
    n = frame.height
    key = frame.select(pl.struct("machine_id", "episode").rle_id()).to_series().to_numpy()
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, n])
    group = np.repeat(np.arange(len(starts)), lengths)
    idx = np.arange(n) - starts[group]  # index in the episode
    i = idx.astype(np.float64)
    first_row = starts[group]

    work: dict[str, np.ndarray] = {}
    exprs: list[pl.Expr] = []
    windowed: list[tuple[str, str, str, int]] = []  # (output, source column, stat, window)
    for s in spec.sensors:
        x = frame[s].cast(pl.Float64).to_numpy()
        c = x - x[first_row]  # centred on the episode's first value: small sums for slopes, drift
        work[s], work[f"{s}|c"], work[f"{s}|ci"] = x, c, c * i
        for w in spec.windows:
            for stat in spec.stats:
                if stat == "slope":
                    windowed.append((f"{s}|six{w}", f"{s}|ci", "sum", w))
                    if "mean" not in spec.stats:  # else Σc over the window comes from the mean
                        windowed.append((f"{s}|mean{w}", s, "mean", w))
                else:
                    windowed.append((f"{s}|{stat}{w}", s, stat, w))
        if spec.drift_window not in spec.windows or "mean" not in spec.stats:
            windowed.append((f"{s}|mean{spec.drift_window}", s, "mean", spec.drift_window))
        exprs += [
            pl.col(s).ewm_mean(alpha=a, adjust=False).over("_g").alias(f"{s}|ewma{j}")
            for j, a in enumerate(spec.ewma_alphas)
        ]
    for name, column, stat, w in windowed:
        col = pl.col(column)
        if stat == "mean":
            expr = col.rolling_mean(w, min_samples=1)
        elif stat == "std":
            expr = col.rolling_std(w, min_samples=1, ddof=0)
        elif stat == "min":
            expr = col.rolling_min(w, min_samples=1)
        elif stat == "max":
            expr = col.rolling_max(w, min_samples=1)
        else:
            expr = col.rolling_sum(w, min_samples=1)
        exprs.append(expr.alias(name))
    rolled = pl.DataFrame({**work, "_g": group}).select(exprs) if exprs else pl.DataFrame()
    res: dict[str, np.ndarray] = {}
    for name, src, stat, w in windowed:
        values = rolled[name].to_numpy().copy()
        _redo_heads(values, work[src], starts, lengths, stat, w)
        res[name] = values

    out: list[pl.Series] = [pl.Series("age", i + 1)]
    if spec.hours_since_reset:
        hours = (frame["ts"] - frame["_start"]).dt.total_microseconds().to_numpy() / _US_PER_HOUR
        out.append(pl.Series("hours_since_reset", hours.astype(np.float64)))
    k = spec.baseline_readings
    for s in spec.sensors:
        x, c = work[s], work[f"{s}|c"]
        cols: dict[str, np.ndarray] = {"last": x}
        if spec.delta:
            delta = np.empty(n)
            delta[1:] = x[1:] - x[:-1]
            delta[idx == 0] = 0.0
            cols["delta"] = delta
        first = x[first_row]
        for w in spec.windows:
            for stat in spec.stats:
                if stat == "slope":
                    # Σ(i − ī)(c − c̄) = Σi·c − ī·Σc, with Σc = m·(mean − first)
                    m = np.minimum(idx + 1, w).astype(np.float64)
                    slope = res[f"{s}|mean{w}"] - first
                    slope *= m
                    slope *= i - (m - 1) / 2
                    np.subtract(res[f"{s}|six{w}"], slope, out=slope)
                    m2 = m * m - 1
                    m2 *= m / 12
                    np.divide(slope, m2, out=slope, where=m > 1)
                    slope[m <= 1] = 0.0
                    cols[f"slope_{w}"] = slope
                else:
                    cols[f"{stat}_{w}"] = res[f"{s}|{stat}{w}"]
        for j, a in enumerate(spec.ewma_alphas):
            cols[f"ewma_{a:g}"] = rolled[f"{s}|ewma{j}"].to_numpy()
        early = np.where(idx < k, c, 0.0).cumsum()
        before = np.r_[0.0, early][starts][group]  # the running sum up to the episode's start
        recent = res[f"{s}|mean{spec.drift_window}"] - first
        cols["drift"] = recent - (early - before) / np.minimum(idx + 1, k)
        out += [pl.Series(f"{s}__{f}", cols[f] if exact else settle(cols[f])) for f in spec.per_sensor]
    return out


def _redo_heads(
    out: np.ndarray, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, stat: str, w: int
) -> None:
    """Recompute, in place, a rolling stat for each group's first ``w - 1`` rows from the group's
    own values only (the whole-column window reached into the group before)."""
    for j in range(min(w - 1, int(lengths.max()) if len(lengths) else 0)):
        has = lengths > j
        rows = starts[has][:, None] + np.arange(j + 1)[None, :]  # each group's first j+1 values
        head = values[rows]
        if stat == "mean":
            got = head.mean(axis=1)
        elif stat == "std":
            got = head.std(axis=1)
        elif stat == "min":
            got = head.min(axis=1)
        elif stat == "max":
            got = head.max(axis=1)
        else:
            got = head.sum(axis=1)
        out[starts[has] + j] = got
