"""Feature cost at 1x, 10x and 100x the harvester demo's history (12 machines x 365 days, ~38
readings a machine a day: ``pitstop.demo_harvesters``).

The 12 machines are simulated once; 10x and 100x tile them under new ids with 0.5 % jitter
(``bench/harvester_fleet.py``). The spec is the champion's, fitted on the 1x history. Per scale:

- offline: ``build_features`` over the whole history, in chunks of 120 machines (the 100x
  feature matrix, 16.8M rows x 178 features, would not fit in memory), summed;
- online: the first ``--hours`` hours replayed as the processor sees them, one micro-batch per
  hour holding every reading of that hour; each batch an ``update`` and a ``get`` of the machines
  it touched. Readings per second and the median batch time.

    PYTHONPATH=src python bench/feature_scales.py [--scales 1,10,100] [--hours 240]
    (or: python bench/feature_store.py --scales)

Last line: one JSON object, ``scales`` (per scale: machines, readings, offline_s,
offline_rows_per_s, online_readings_per_s, online_batch_p50_ms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import polars as pl
from bench.harvester_fleet import START, champion_spec, inputs_matrix

from pitstop.features import FeatureSpec, OnlineFeatures, build_features
from pitstop.sim.harvester import simulate

MACHINES, DAYS, CHUNK = 12, 365, 120


def tiled(base: pl.DataFrame, copies: range, seed: int) -> pl.DataFrame:
    """``base`` (12 machines) under new ids, one copy per item of ``copies``, jittered."""
    sensors = [c for c in base.columns if base[c].dtype == pl.Float64 and c not in ("lat", "lon")]
    rng = np.random.default_rng(seed)
    parts = []
    for copy in copies:
        frame = base.with_columns(pl.format("C{}-{}", pl.lit(copy), pl.col("machine_id")).alias("machine_id"))
        if copy:
            jitter = 1.0 + rng.normal(0.0, 0.005, (base.height, len(sensors)))
            frame = frame.with_columns((pl.col(s) * jitter[:, i]).alias(s) for i, s in enumerate(sensors))
        parts.append(frame)
    return pl.concat(parts)


def offline(base: pl.DataFrame, scale: int, spec: FeatureSpec) -> float:
    took = 0.0
    per_chunk = CHUNK // MACHINES
    for first in range(0, scale, per_chunk):
        chunk = tiled(base, range(first, min(scale, first + per_chunk)), first)
        started = time.perf_counter()
        build_features(chunk, spec)
        took += time.perf_counter() - started
    return took


def online(base: pl.DataFrame, scale: int, spec: FeatureSpec, hours: int) -> tuple[float, float]:
    end = START.timestamp() * 1e6 + hours * 3_600_000_000
    head = base.filter(pl.col("ts").dt.epoch("us") < end)
    frame = tiled(head, range(scale), 0).with_columns(
        (pl.col("ts").dt.epoch("us") // 3_600_000_000).alias("hour")
    )
    frame = frame.sort("hour", "machine_id", "seq")
    state = OnlineFeatures(spec)
    times = []
    readings = 0
    for (_,), batch in frame.group_by(["hour"], maintain_order=True):
        ids = batch["machine_id"].to_numpy()
        values = inputs_matrix(batch, spec)
        started = time.perf_counter()
        state.update(ids, batch["seq"].to_numpy(), batch["ts"].dt.epoch("us").to_numpy(), values)
        state.get(list(dict.fromkeys(ids.tolist())))
        times.append(time.perf_counter() - started)
        readings += batch.height
    return readings / sum(times), statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1,10,100")
    ap.add_argument("--hours", type=int, default=240, help="hours replayed online per scale")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    base = simulate(MACHINES, DAYS, seed=7, start=START, prefix="H-").readings
    base = base.sort("machine_id", "ts").with_columns(seq=pl.int_range(1, pl.len() + 1).over("machine_id"))
    spec = champion_spec(base)
    build_features(base.filter(pl.col("machine_id") == base["machine_id"][0]), spec)  # compiles the kernels
    print(
        f"demo history: {MACHINES} machines x {DAYS} days, {base.height:,} readings, "
        f"{len(spec.names)} features "
        f"(simulated in {time.perf_counter() - started:.1f}s)"
    )
    rows = []
    print(
        f"{'scale':>6}{'machines':>10}{'readings':>13}{'offline s':>11}{'rows/s':>12}"
        f"{'online rd/s':>13}{'batch p50 ms':>14}"
    )
    for scale in (int(s) for s in args.scales.split(",")):
        offline_s = offline(base, scale, spec)
        rate, batch_ms = online(base, scale, spec, args.hours)
        row = {
            "scale": scale,
            "machines": MACHINES * scale,
            "readings": base.height * scale,
            "offline_s": round(offline_s, 2),
            "offline_rows_per_s": round(base.height * scale / offline_s),
            "online_readings_per_s": round(rate),
            "online_batch_p50_ms": round(batch_ms, 3),
        }
        rows.append(row)
        print(
            f"{scale:>5}x{row['machines']:>10,}{row['readings']:>13,}{offline_s:>11.2f}"
            f"{row['offline_rows_per_s']:>12,}{row['online_readings_per_s']:>13,}{batch_ms:>14.3f}"
        )
    print(json.dumps({"scales": rows, "online_hours": args.hours}))


if __name__ == "__main__":
    main()
