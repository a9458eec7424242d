"""Processor memory: RSS of the online state for 0 to 10,000 machines.

Per size, a fresh subprocess builds what a processor holds per machine type: ``OnlineFeatures``
for the harvester champion's spec (``bench/harvester_fleet.py``, 178 features, a 60-reading
window), fed every machine's readings in micro-batches of 500 machines (about 3 days of readings
each, ~140), and the online store the API reads (each machine's row published, as
``Processor._publish_lane`` does). RSS (psutil) is read after the imports and the spec (the
0-machine line) and again after the state is built; readings are generated batch by batch from a
small simulated fleet, so they do not count.

    PYTHONPATH=src python bench/memory.py [--sizes 0,1000,2000,5000,10000]

Target: at most 1 GiB with 10,000 machines. The last line is one JSON object with
``rss_mb_by_machines`` and ``mb_per_1000_machines`` (the least-squares slope).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH = 500
LIMIT_MB = 1024


def child(machines: int) -> None:
    import numpy as np
    import polars as pl
    import psutil
    from bench.harvester_fleet import champion_spec, fleet_readings, inputs_matrix

    from pitstop.features import OnlineFeatures
    from pitstop.features.online import _ARRAYS
    from pitstop.features.store import OnlineStore

    base = fleet_readings(48, 3)
    spec = champion_spec(base)
    base_ids = base["machine_id"].to_numpy()
    seqs = base["seq"].to_numpy()
    ts = base["ts"].dt.epoch("us").to_numpy()
    values = inputs_matrix(base, spec)
    per = base["machine_id"].n_unique()
    which = np.unique(base_ids, return_inverse=True)[1]  # each row's machine, 0 .. per - 1
    del base
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    online = OnlineFeatures(spec)
    store = OnlineStore()
    rng = np.random.default_rng(0)
    done = 0
    while done < machines:
        copies = []
        ids_parts = []
        rows_s, rows_t = [], []
        for _ in range(-(-min(BATCH, machines - done) // per)):
            rows = which < min(per, machines - done)
            ids_parts.append(np.char.add(f"M{done:06d}-", base_ids[rows].astype(str)).astype(object))
            copies.append(values[rows] * (1.0 + rng.normal(0.0, 0.005, values[rows].shape)))
            rows_s.append(seqs[rows])
            rows_t.append(ts[rows])
            done += min(per, machines - done)
        ids = np.concatenate(ids_parts)
        online.update(ids, np.concatenate(rows_s), np.concatenate(rows_t), np.concatenate(copies))
        batch = list(dict.fromkeys(ids.tolist()))
        store.publish("harvester", online, batch, online.get(batch), "1")
        del ids, ids_parts, copies, batch
    gc.collect()
    after = process.memory_info().rss
    arrays = sum(getattr(online, name).nbytes for name in _ARRAYS)
    rows, _ = store.lookup(list(online.slots))
    published = sum((0 if r.values is None else r.values.nbytes) + len(r.values_json) for r in rows)
    found = {
        "machines": len(online),
        "rss_mb": after / 2**20,
        "state_mb": (after - before) / 2**20,
        "arrays_mb": (arrays + published) / 2**20,
    }
    print(json.dumps(found))
    _ = pl  # imported as the processor has it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0,1000,2000,5000,10000")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child)
        return
    rss: dict[int, float] = {}
    state: dict[int, float] = {}
    arrays: dict[int, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)], capture_output=True, text=True, check=True
        )
        found = json.loads(out.stdout.strip().splitlines()[-1])
        rss[found["machines"]] = round(found["rss_mb"], 1)
        state[found["machines"]] = round(found["state_mb"], 1)
        arrays[found["machines"]] = round(found["arrays_mb"], 1)
        print(
            f"{found['machines']:>7,} machines: RSS {found['rss_mb']:7.1f} MB "
            f"(state {found['state_mb']:6.1f} MB, its arrays {found['arrays_mb']:6.1f} MB)"
        )
    xs = sorted(rss)
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(rss[x] for x in xs) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (rss[x] - mean_y) for x in xs) / var if var else 0.0
    biggest = rss[xs[-1]]
    print(f"{slope * 1000:.1f} MB per 1,000 machines; {biggest:.0f} MB at {xs[-1]:,} (limit {LIMIT_MB} MB)")
    print(
        json.dumps(
            {
                "rss_mb_by_machines": {str(x): rss[x] for x in xs},
                "state_mb_by_machines": {str(x): state[x] for x in xs},
                "arrays_mb_by_machines": {str(x): arrays[x] for x in xs},
                "mb_per_1000_machines": round(slope * 1000, 2),
                "within_1gib": biggest <= LIMIT_MB,
            }
        )
    )


if __name__ == "__main__":
    main()
