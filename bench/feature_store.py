"""Online feature store benchmark: our processor state and ``GET /api/v1/features`` beside Feast.

The same features for ``--machines`` harvesters (default 10,000): the shipped fleet's harvester
spec fitted as a champion's is (178 features), computed from simulated readings
(``bench/harvester_fleet.py``).

- ours, load (``ours_load_s``): what a restarting processor does (``StreamState.load`` then
  ``Processor._publish_lane``): read the lane's snapshot file, restore ``OnlineFeatures`` from it,
  compute every machine's row and publish them to the online store (each row serialized once).
  Feast's materialize likewise loads persisted feature data into its online store.
- ours, rebuild (``ours_rebuild_s``): a lane built without a snapshot (``StreamState._build``:
  the machines' raw readings read from the Delta lake and fed to ``OnlineFeatures``), then
  published: more work than Feast's load, which starts from finished feature rows.
- ours, lookup (``ours_lookup100_ms``): ``GET /api/v1/features`` for 100 random machines over
  HTTP to a uvicorn server in this process, median of the ``Server-Timing`` durations (the
  route's own time); the client round-trip is reported too (client and server share this
  process and its GIL). Rows do not change during the lookups, so after the first touch each
  row's JSON is reused; ``ours_lookup100_cold_ms`` is the median of the first 20 lookups, whose
  rows are formatted then (as after a micro-batch moved them).
- Feast: a repo with a SQLite online store and a FileSource (parquet of each machine's latest
  feature row, the same values), ``apply``, then ``materialize`` (``feast_load_s``), then
  ``get_online_features`` of 100 random machines (``feast_lookup100_ms``, median).
- Both sides' values of a sample of machines are compared.

Feast has pins of its own: it runs in a separate venv, as a subprocess (``bench/feast_side.py``)::

    python3.11 -m venv /work/venv-feast && /work/venv-feast/bin/pip install feast
    PYTHONPATH=src python bench/feature_store.py --feast-python /work/venv-feast/bin/python

(or ``PITSTOP_FEAST_PYTHON``). Without it the Feast figures are null and the bench says so.
``--scales`` prints instead the cost at 1x, 10x and 100x the harvester demo's history (see
``bench/feature_scales.py``). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
import polars as pl
from bench.harvester_fleet import champion_spec, fleet_readings

from pitstop.config import load_settings
from pitstop.features import FeatureSpec, OnlineFeatures
from pitstop.features.store import OnlineStore
from pitstop.lake import Lake
from pitstop.processor.state import feed
from pitstop.schema import shipped_fleet

HERE = Path(__file__).resolve().parent
DEFAULT_FEAST = "/work/venv-feast/bin/python"


def write_lake(root: Path, readings: pl.DataFrame) -> Lake:
    lake = Lake(root, shipped_fleet("harvesters").sensors)
    lake.ensure()
    frame = readings.with_columns(
        pl.col("ts").dt.date().alias("day"), pl.lit(None, pl.Int64).alias("bus_position")
    )
    lake.append("telemetry", frame.to_arrow())
    return lake


def our_rebuild(
    lake: Lake, spec: FeatureSpec, ids: list[str]
) -> tuple[OnlineStore, OnlineFeatures, dict[str, float]]:
    """The lane's rebuild from the lake and its publication (the processor's own calls)."""
    t0 = time.perf_counter()
    have = set(lake.columns("telemetry"))
    cols = ["machine_id", "ts", "seq", "bus_position", *(c for c in spec.inputs if c in have)]
    clean = lake.read("telemetry", columns=cols, machine_ids=ids)
    clean = clean.sort("machine_id", "bus_position", "seq", nulls_last=False)
    t1 = time.perf_counter()
    online = OnlineFeatures(spec)
    feed(online, clean)
    t2 = time.perf_counter()
    store = publish(online)
    t3 = time.perf_counter()
    return store, online, {"read_s": t1 - t0, "feed_s": t2 - t1, "publish_s": t3 - t2, "total_s": t3 - t0}


def publish(online: OnlineFeatures) -> OnlineStore:
    ids = [m for m, slot in online.slots.items() if online.count[slot] >= 1]
    store = OnlineStore()
    store.publish("harvester", online, ids, online.get(ids), "1", replace=True)
    return store


def our_load(snapshot: Path, spec: FeatureSpec) -> tuple[OnlineStore, dict[str, float]]:
    """A restart: the lane's snapshot restored, then published (``StreamState.load``, ``_publish_lane``)."""
    t0 = time.perf_counter()
    online, _ = OnlineFeatures.restore(spec, snapshot.read_bytes())
    t1 = time.perf_counter()
    store = publish(online)
    t2 = time.perf_counter()
    return store, {"restore_s": t1 - t0, "publish_s": t2 - t1, "total_s": t2 - t0}


def serve(store: OnlineStore, data_dir: Path) -> tuple[str, dict[str, str], Any]:
    """The real app with a processor holding ``store``, on uvicorn in a thread."""
    import uvicorn

    from pitstop.platform import Platform
    from pitstop.processor import Processor
    from pitstop.web import create_app
    from pitstop.web.app import server_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    platform = Platform.open(load_settings(None, data_dir=data_dir, port=port, host="127.0.0.1"))
    app = create_app(platform, Processor(platform, store=store))
    server = uvicorn.Server(server_config(app, platform.settings))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {platform.admin_token()}"}, server


def our_lookups(
    url: str, headers: dict[str, str], ids: list[str], n: int
) -> tuple[list[float], list[float], list[float]]:
    """Server and client times of ``n`` lookups of 100 random machines, after 50 not timed; and
    the server times of the first 20, cold (rows not serialized since they were published)."""
    rng = random.Random(1)
    server_ms, client_ms, cold_ms = [], [], []
    with httpx.Client(base_url=url, headers=headers) as client:
        for i in range(n + 50):
            asked = ",".join(rng.sample(ids, 100))
            started = time.perf_counter()
            r = client.get("/api/v1/features", params={"machine_ids": asked})
            took = (time.perf_counter() - started) * 1000
            r.raise_for_status()
            server = float(r.headers["server-timing"].split("dur=")[1])
            if i < 20:
                cold_ms.append(server)
            if i >= 50:
                client_ms.append(took)
                server_ms.append(server)
    return server_ms, client_ms, cold_ms


def feast_side(
    python: str, folder: Path, store_rows: pl.DataFrame, names: list[str], sample: list[str], lookups: int
) -> dict[str, Any]:
    parquet = folder / "features.parquet"
    store_rows.write_parquet(parquet)
    job = {
        "repo": str(folder / "repo"),
        "parquet": str(parquet),
        "features": len(names),
        "machine_ids": store_rows["machine_id"].to_list(),
        "sample": sample,
        "lookups": lookups,
    }
    (folder / "job.json").write_text(json.dumps(job))
    done = subprocess.run(
        [python, str(HERE / "feast_side.py"), str(folder / "job.json")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"the Feast side failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=3.0, help="simulated days per machine (~38 readings a day)")
    ap.add_argument("--lookups", type=int, default=2000, help="timed HTTP lookups of 100 machines")
    ap.add_argument("--feast-lookups", type=int, default=200)
    ap.add_argument("--feast-python", default=os.environ.get("PITSTOP_FEAST_PYTHON", DEFAULT_FEAST))
    ap.add_argument(
        "--scales", action="store_true", help="the 1x/10x/100x table instead (bench/feature_scales.py)"
    )
    args = ap.parse_args()
    if args.scales:
        from bench.feature_scales import main as scales

        scales([])
        return

    started = time.perf_counter()
    readings = fleet_readings(args.machines, args.days)
    spec = champion_spec(readings.filter(pl.col("machine_id") < "H-00200"))
    ids = readings["machine_id"].unique().sort().to_list()
    print(
        f"{len(ids):,} machines, {readings.height:,} readings, {len(spec.names)} features "
        f"(simulated in {time.perf_counter() - started:.1f}s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lake = write_lake(folder / "lake", readings)
        del readings
        _, online, rebuilt = our_rebuild(lake, spec, ids)
        print("ours rebuild from the lake: " + ", ".join(f"{k} {v:.2f}" for k, v in rebuilt.items()))
        snapshot = folder / "features-harvester.npz"
        snapshot.write_bytes(online.snapshot({"position": 0}))
        store, parts = our_load(snapshot, spec)
        print("ours load from the snapshot: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
        url, headers, server = serve(store, folder / "data")
        server_ms, client_ms, cold_ms = our_lookups(url, headers, ids, args.lookups)
        rng = random.Random(2)
        sample = rng.sample(ids, 20)
        ours_sample = httpx.get(
            f"{url}/api/v1/features", params={"machine_ids": ",".join(sample)}, headers=headers
        ).json()
        server.should_exit = True

        feast: dict[str, Any] | None = None
        if not Path(args.feast_python).exists():
            print(
                f"Feast side SKIPPED: no python at {args.feast_python} "
                "(see this file's docstring to make the venv)"
            )
        else:
            [found], _ = store.lookup(ids)
            ts = pl.Series("event_timestamp", online.last_ts[[online.slots[m] for m in ids]]).cast(
                pl.Datetime("us", "UTC")
            )
            rows = pl.DataFrame({"machine_id": ids, "event_timestamp": ts}).hstack(
                pl.DataFrame(found.values, schema=[f"f{i}" for i in range(len(spec.names))], orient="row")
            )
            feast = feast_side(args.feast_python, folder, rows, list(spec.names), sample, args.feast_lookups)

    ours_rows = next(iter(ours_sample["types"].values()))
    mine = dict(zip(ours_rows["machine_ids"], ours_rows["values"], strict=True))
    same = None
    if feast is not None:
        same = all(
            np.allclose(
                np.array(mine[m], float),
                np.array([np.nan if v is None else v for v in feast["sample"][m]], float),
                equal_nan=True,
                rtol=0,
                atol=0,
            )
            for m in sample
        )
    ours_lookup = statistics.median(server_ms)
    result = {
        "machines": len(ids),
        "features": len(spec.names),
        "ours_load_s": round(parts["total_s"], 3),
        "ours_rebuild_s": round(rebuilt["total_s"], 3),
        "feast_load_s": round(feast["load_s"], 3) if feast else None,
        "load_speedup": round(feast["load_s"] / parts["total_s"], 1) if feast else None,
        "ours_lookup100_ms": round(ours_lookup, 4),
        "ours_lookup100_p99_ms": round(sorted(server_ms)[int(0.99 * (len(server_ms) - 1))], 4),
        "ours_lookup100_cold_ms": round(statistics.median(cold_ms), 4),
        "ours_roundtrip100_ms": round(statistics.median(client_ms), 3),
        "feast_lookup100_ms": round(feast["lookup100_ms"], 3) if feast else None,
        "lookup_speedup": round(feast["lookup100_ms"] / ours_lookup, 1) if feast else None,
        "feast_apply_s": round(feast["apply_s"], 3) if feast else None,
        "same_values": same,
    }
    print(f"{'':18}{'ours':>12}{'Feast':>12}")
    print(f"{'load (s)':18}{result['ours_load_s']:>12}{result['feast_load_s']!s:>12}")
    print(f"{'rebuild, raw (s)':18}{result['ours_rebuild_s']:>12}{'-':>12}")
    print(f"{'lookup 100 (ms)':18}{result['ours_lookup100_ms']:>12}{result['feast_lookup100_ms']!s:>12}")
    print(
        f"(round trip {result['ours_roundtrip100_ms']} ms; "
        "targets: load >= 100x, lookup p50 <= 0.5 ms and >= 20x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
