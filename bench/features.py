"""Feature benchmark: online update throughput and offline build time, beside pandas.

For the turbofan machine type's default feature spec (every informative sensor):

- online: ``OnlineFeatures`` over 1,000 machines, fed micro-batches of ``--per-machine`` readings from
  every machine; each batch is an ``update`` and a ``get`` of every machine it touched (what the
  processor does), timed per batch, single-threaded numpy;
- offline: ``build_features`` over FD001 (20,631 rows), and over a synthetic lake of ``--rows`` rows
  (1,000 machines), built in chunks of ``--chunk-machines`` machines (the full feature matrix of 10M
  rows would not fit in memory);
- pandas: a straightforward ``groupby().rolling()`` implementation of the same spec on the same
  synthetic chunks, in this process; checked against ours on the first chunk.

    python bench/features.py [--rows 10000000] [--per-machine 10] [--batches 200]

The last line is one JSON object: online_readings_per_s, online_p99_ms, offline_fd001_s,
offline_10m_s, pandas_10m_s (and more).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import polars as pl

from pitstop.features import FeatureSpec, OnlineFeatures, build_features
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped

T0 = 1_767_225_600_000_000
MINUTE = 60_000_000


def synthetic(machines: range, readings: int, spec: FeatureSpec, seed: int) -> pl.DataFrame:
    """Readings of ``machines`` (``readings`` each): slow degradation, noise and regimes."""
    rng = np.random.default_rng(seed)
    n = len(machines) * readings
    ids = np.repeat([f"syn-{m:05d}" for m in machines], readings)
    seq = np.tile(np.arange(1, readings + 1), len(machines))
    trend = np.cumsum(rng.normal(0, 0.01, (n, len(spec.sensors))), axis=0)
    values = 100.0 + trend + rng.normal(0, 1.0, (n, len(spec.sensors)))
    frame = pl.DataFrame({"machine_id": ids, "seq": seq})
    frame = frame.with_columns(
        (pl.lit(T0) + pl.col("seq") * MINUTE).cast(pl.Datetime("us", "UTC")).alias("ts"),
        *[pl.Series(s, values[:, i]) for i, s in enumerate(spec.sensors)],
        *[pl.lit(0.0).alias(s) for s in spec.regime_settings],
    )
    return frame


def pandas_features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The same spec, the way one would write it in pandas: groupby().rolling() per window and stat."""
    frame = frame.sort_values(["machine_id", "seq"])
    g = frame.groupby("machine_id", sort=False)
    out = {"age": g.cumcount().astype(float) + 1}
    idx = g.cumcount().astype(float)
    k = spec.baseline_readings
    for s in spec.sensors:
        x = frame[s]
        c = x - g[s].transform("first")
        cg = c.groupby(frame["machine_id"], sort=False)
        out[f"{s}__last"] = x
        out[f"{s}__delta"] = g[s].diff().fillna(0.0)
        for w in spec.windows:  # only the stats the spec asks for
            roll = g[s].rolling(w, min_periods=1)
            if "mean" in spec.stats:
                out[f"{s}__mean_{w}"] = roll.mean().reset_index(level=0, drop=True)
            if "std" in spec.stats:
                out[f"{s}__std_{w}"] = roll.std(ddof=0).reset_index(level=0, drop=True).fillna(0.0)
            if "min" in spec.stats:
                out[f"{s}__min_{w}"] = roll.min().reset_index(level=0, drop=True)
            if "max" in spec.stats:
                out[f"{s}__max_{w}"] = roll.max().reset_index(level=0, drop=True)
            if "slope" in spec.stats:
                m = np.minimum(idx + 1, w)
                sx = cg.rolling(w, min_periods=1).sum().reset_index(level=0, drop=True)
                six = (c * idx).groupby(frame["machine_id"], sort=False).rolling(w, min_periods=1).sum()
                six = six.reset_index(level=0, drop=True)
                slope = (six - (idx - (m - 1) / 2) * sx) / (m * (m * m - 1) / 12)
                out[f"{s}__slope_{w}"] = slope.where(m > 1, 0.0)
        for a in spec.ewma_alphas:
            out[f"{s}__ewma_{a:g}"] = g[s].transform(lambda v, a=a: v.ewm(alpha=a, adjust=False).mean())
        early = c.where(idx < k, 0.0).groupby(frame["machine_id"], sort=False).cumsum()
        baseline = early / np.minimum(idx + 1, k)
        recent = cg.rolling(spec.drift_window, min_periods=1).mean().reset_index(level=0, drop=True)
        out[f"{s}__drift"] = recent - baseline
    return pd.DataFrame(out)[spec.names]


def bench_online(spec: FeatureSpec, machines: int, per_machine: int, batches: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    online = OnlineFeatures(spec)
    ids = np.repeat([f"m{m:05d}" for m in range(machines)], per_machine)
    names = [f"m{m:05d}" for m in range(machines)]
    width = len(spec.inputs)
    times = []
    total = 0
    for b in range(batches):
        seqs = np.tile(np.arange(per_machine), machines) + b * per_machine
        ts = T0 + seqs * MINUTE
        values = 100.0 + rng.normal(0, 1.0, (len(ids), width))
        started = time.perf_counter()
        online.update(ids, seqs, ts, values)
        online.get(names)
        times.append(time.perf_counter() - started)
        total += len(ids)
    warm = times[5:]  # the first batches allocate
    rate = (total - 5 * machines * per_machine) / sum(warm)
    return rate, float(np.quantile(warm, 0.99) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--per-machine", type=int, default=10, help="readings per machine per micro-batch")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--chunk-machines", type=int, default=50)
    parser.add_argument("--skip-pandas", action="store_true")
    args = parser.parse_args()
    spec = TURBOFAN.feature_spec
    print(f"spec {spec.hash}: {len(spec.sensors)} sensors, {len(spec.names)} features", flush=True)

    rate, p99 = bench_online(spec, args.machines, args.per_machine, args.batches)
    print(
        f"online: {rate:,.0f} readings/s, p99 {p99:.1f} ms per micro-batch of "
        f"{args.machines * args.per_machine:,} readings ({args.machines} machines)",
        flush=True,
    )

    raw = shipped("fd001_train")
    fd001 = raw.select(
        pl.format("u{}", "unit").alias("machine_id"),
        pl.col("cycle").alias("seq"),
        (pl.lit(T0) + pl.col("cycle") * MINUTE).cast(pl.Datetime("us", "UTC")).alias("ts"),
        *spec.inputs,
    )
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        build_features(fd001, spec)
        runs.append(time.perf_counter() - started)
    fd001_s = statistics.median(runs)
    print(f"offline FD001 ({fd001.height:,} rows): {fd001_s:.2f} s (median of 5)", flush=True)

    per = args.rows // args.machines
    chunks = [
        range(a, min(a + args.chunk_machines, args.machines))
        for a in range(0, args.machines, args.chunk_machines)
    ]
    ours = theirs = 0.0
    checked = None
    for i, chunk in enumerate(chunks):
        frame = synthetic(chunk, per, spec, seed=i)
        started = time.perf_counter()
        build_features(frame, spec)
        ours += time.perf_counter() - started
        if not args.skip_pandas:
            pdf = frame.to_pandas()
            started = time.perf_counter()
            theirs_frame = pandas_features(pdf, spec)
            theirs += time.perf_counter() - started
            if checked is None:  # unsettled (no float32 rounding), outside the timing
                exact = build_features(frame, spec, exact=True).select(spec.names).to_numpy()
                checked = float(np.nanmax(np.abs(exact - theirs_frame.to_numpy())))
        print(f"  chunk {i + 1}/{len(chunks)}: ours {ours:.1f} s, pandas {theirs:.1f} s so far", flush=True)
    rows = per * args.machines
    print(f"offline {rows:,} rows: ours {ours:.1f} s, pandas {theirs:.1f} s", flush=True)
    if checked is not None:
        print(f"pandas and ours (exact=True) agree within {checked:.2e} (first chunk, every feature)")
    result = {
        "online_readings_per_s": round(rate),
        "online_p99_ms": round(p99, 2),
        "offline_fd001_s": round(fd001_s, 3),
        "offline_10m_s": round(ours, 1),
        "pandas_10m_s": round(theirs, 1) if not args.skip_pandas else None,
        "offline_speedup": round(theirs / ours, 1) if not args.skip_pandas else None,
        "rows": rows,
        "features": len(spec.names),
        "pandas_max_abs_diff": checked,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
