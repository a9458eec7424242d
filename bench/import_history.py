"""History import benchmark: ``pitstop import readings`` in process, beside the floor.

A synthetic fleet file (one machine type, ``--sensors`` sensors) and a CSV of ``--rows`` readings
from ``--machines`` machines (one per hour each, 0.1% of rows with a value out of range), also
written as Parquet. Each run imports the CSV into a fresh data dir (validation, dedupe against the
lake, seqs, quarantine, ops DB, audit). The floor, in the same process on the same file: a typed
Polars read (``ts`` cast by Arrow) plus one ``deltalake.write_deltalake`` of the same rows into a
day-partitioned table, nothing checked. Medians of ``--runs`` runs. Then the Parquet file is
imported, and the CSV imported a second time into the last data dir, which must store nothing.

    python bench/import_history.py [--rows 1000000] [--machines 1000] [--sensors 12] [--runs 3] [--bad 0.01]

The last line is one JSON object: rows, import_rows_per_s, floor_rows_per_s, ratio,
reimport_stored (and more).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from pitstop.config import load_settings
from pitstop.ingest.history import ReadingsImport, import_readings
from pitstop.platform import Platform
from pitstop.schema import parse_fleet

START = np.datetime64("2025-01-01T00:00:00", "us")


def fleet_toml(sensors: int) -> str:
    lines = ['[machine_types.pump]\ntime_unit = "hours"\ndescription = "synthetic pump"\n']
    for i in range(1, sensors + 1):
        lines.append(f'[[machine_types.pump.sensors]]\nname = "p{i}"\nunit = "bar"\nlow = 0\nhigh = 200\n')
    return "\n".join(lines)


def synthetic(
    path: Path, rows: int, machines: int, sensors: int, bad: float = 0.0, seed: int = 7
) -> pl.DataFrame:
    """``rows`` readings, ``machines`` machines, one per hour each; 0.1% with a value out of range
    and a share ``bad`` with a value that is no number (rejected)."""
    rng = np.random.default_rng(seed)
    per = rows // machines
    n = per * machines
    ids = np.repeat(np.array([f"pump-{m:05d}" for m in range(machines)]), per)
    hours = np.tile(np.arange(per), machines).astype("timedelta64[h]")
    values = np.round(100 + rng.normal(0, 15, (n, sensors)), 3)
    values[rng.random(n) < 0.001, 0] = 250.0  # out of range: quarantined
    frame = pl.DataFrame({"machine_id": ids, "ts": pl.Series(START + hours).dt.replace_time_zone("UTC")})
    frame = frame.with_columns([pl.Series(f"p{i + 1}", values[:, i]) for i in range(sensors)])
    if bad:
        broken = pl.Series(rng.random(n) < bad)
        frame = frame.with_columns(
            pl.when(broken).then(pl.lit("n/a")).otherwise(pl.col("p2").cast(pl.String)).alias("p2")
        )
    frame.write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    frame.write_parquet(path.with_suffix(".parquet"))
    return frame


def run_import(root: Path, fleet_text: str, files: list[Path]) -> ReadingsImport:
    platform = Platform.open(load_settings(None, data_dir=root), fleet=parse_fleet(fleet_text))
    try:
        return import_readings(
            files,
            lake=platform.lake,
            db=platform.db,
            fleet=platform.fleet,
            max_future_skew_s=platform.settings.max_future_skew_s,
        )
    finally:
        platform.close()


def floor(csv: Path, target: Path, sensors: int) -> float:
    """Seconds for the fastest plain read we know (typed Polars CSV read, Arrow's ISO 8601 cast of
    ``ts``) and one Delta write of the same rows, day-partitioned like telemetry; nothing checked."""
    started = time.perf_counter()
    schema = {
        "machine_id": pl.String,
        "ts": pl.String,
        **{f"p{i}": pl.Float64 for i in range(1, sensors + 1)},
    }
    frame = pl.read_csv(csv, schema=schema, ignore_errors=True)  # a cell that is no number: null
    ts = pl.from_arrow(pc.cast(frame.get_column("ts").to_arrow(), pa.timestamp("us", tz="UTC")))
    frame = frame.with_columns(
        pl.Series("ts", ts),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("machine_id").alias("seq"),
    ).with_columns(pl.col("ts").dt.date().alias("day"), pl.lit(None, pl.Int64).alias("bus_position"))
    write_deltalake(str(target), frame.to_arrow(), partition_by=["day"])
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--machines", type=int, default=1000)
    ap.add_argument("--sensors", type=int, default=12)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bad", type=float, default=0.0, help="share of rows with a value that is no number")
    args = ap.parse_args()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="pitstop-import-bench-") as tmp:
        root = Path(tmp)
        text = fleet_toml(args.sensors)
        csv = root / "history.csv"
        data = synthetic(csv, args.rows, args.machines, args.sensors, args.bad)
        rows = data.height
        say(
            f"{rows:,} rows, {args.machines:,} machines, {args.sensors} sensors: "
            f"{csv.stat().st_size / 1e6:.0f} MB CSV"
        )
        ours, floors, result = [], [], None
        for run in range(args.runs):
            result = run_import(root / f"data-{run}", text, [csv])
            ours.append(result.seconds)
            floors.append(floor(csv, root / f"floor-{run}", args.sensors))
            say(
                f"run {run + 1}: import {result.seconds:.2f} s ({result.rows_per_s:,.0f} rows/s: "
                f"{result.stored:,} stored, {result.quarantined:,} quarantined, "
                f"{result.rejected:,} rejected); "
                f"floor {floors[-1]:.2f} s"
            )
        assert result is not None
        parquet = run_import(root / "data-parquet", text, [csv.with_suffix(".parquet")])
        say(f"parquet: import {parquet.seconds:.2f} s ({parquet.rows_per_s:,.0f} rows/s)")
        again = run_import(root / f"data-{args.runs - 1}", text, [csv])
        say(
            f"re-import: {again.seconds:.2f} s, {again.stored + again.quarantined:,} stored, "
            f"{again.duplicates:,} duplicates"
        )
    ours_s, floor_s = statistics.median(ours), statistics.median(floors)
    summary = {
        "rows": rows,
        "import_rows_per_s": round(rows / ours_s),
        "floor_rows_per_s": round(rows / floor_s),
        "ratio": round(floor_s / ours_s, 3),
        "import_s": round(ours_s, 3),
        "floor_s": round(floor_s, 3),
        "parquet_rows_per_s": round(parquet.rows_per_s),
        "quarantined": result.quarantined,
        "reimport_stored": again.stored + again.quarantined,
        "reimport_duplicates": again.duplicates,
        "reimport_s": round(again.seconds, 3),
    }
    say(
        f"import {summary['import_rows_per_s']:,} rows/s beside the floor's {summary['floor_rows_per_s']:,} "
        f"(Polars read + one Delta write, unchecked): {summary['ratio']:.2f} of it"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
