"""The Feast side of ``bench/feature_store.py``, run with the Feast venv's python (not ours).

    python feast_side.py JOB.json

JOB names the parquet file of feature rows (machine_id, event_timestamp, f0..fN), the feature
count, a folder for the repo, the lookups to time and the machines whose values to return. A
feature repo with a SQLite online store and a FileSource offline store is applied, then
materialized (timed: ``load_s``), then ``get_online_features`` is timed for 100 machines at a time.
Prints one JSON object.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float64, String

    repo = Path(job["repo"])
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: pitstop_bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {repo / 'online.db'}\n"
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    names = [f"f{i}" for i in range(job["features"])]
    machine = Entity(name="machine", join_keys=["machine_id"])
    source = FileSource(path=job["parquet"], timestamp_field="event_timestamp")
    view = FeatureView(
        name="harvester",
        entities=[machine],
        ttl=timedelta(days=3650),
        schema=[Field(name="machine_id", dtype=String), *[Field(name=n, dtype=Float64) for n in names]],
        source=source,
        online=True,
    )
    store = FeatureStore(repo_path=str(repo))
    started = time.perf_counter()
    store.apply([machine, view])
    apply_s = time.perf_counter() - started
    started = time.perf_counter()
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1))
    load_s = time.perf_counter() - started

    refs = [f"harvester:{n}" for n in names]
    ids: list[str] = job["machine_ids"]
    rng = random.Random(1)
    times = []
    for _ in range(job["lookups"]):
        asked = rng.sample(ids, 100)
        started = time.perf_counter()
        store.get_online_features(features=refs, entity_rows=[{"machine_id": m} for m in asked]).to_dict()
        times.append((time.perf_counter() - started) * 1000)
    got = store.get_online_features(
        features=refs, entity_rows=[{"machine_id": m} for m in job["sample"]]
    ).to_dict()
    sample = {m: [got[n][i] for n in names] for i, m in enumerate(got["machine_id"])}
    print(
        json.dumps(
            {
                "apply_s": apply_s,
                "load_s": load_s,
                "lookup100_ms": statistics.median(times),
                "lookup100_p99_ms": sorted(times)[int(0.99 * (len(times) - 1))],
                "sample": sample,
            }
        )
    )


if __name__ == "__main__":
    main()
