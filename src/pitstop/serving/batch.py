"""Batch scoring: every reading of a lake version, scored by a registered model, into the lake's
``predictions`` table.

The features are the offline build of that version (the same numbers the processor computed
online). A run is one Delta commit tagged with an app transaction per (model version, mode), at
the lake version + 1: running it again for the same lake version and model writes nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pitstop.features import build_features

if TYPE_CHECKING:
    from pitstop.platform import Platform
    from pitstop.training.train import Progress

CHUNK = 100_000


def score_lake(
    platform: Platform,
    *,
    lake_version: int | None = None,
    alias: str = "champion",
    latest: bool = False,
    progress: Progress | None = None,
    machine_type: str | None = None,
) -> dict[str, Any]:
    """Score a machine type's machines (default: the fleet's first type) in a telemetry version
    (default: the newest) with the model ``alias`` of that type points at; with ``latest``, only
    each machine's latest reading. Returns what was written."""
    from pitstop.training.pipeline import machines_of_type

    started = time.perf_counter()
    lake = platform.lake
    version = lake.version("telemetry") if lake_version is None else lake_version
    name = platform.deployment_for(machine_type or platform.default_type).machine_type
    model = platform.registry_for(name).load(alias)
    members = machines_of_type(platform, name)
    mode = "latest" if latest else "all"
    app_id = f"batch-score:{model.name}:{model.version}:{mode}"
    summary: dict[str, Any] = {
        "lake_version": version,
        "model": model.name,
        "model_version": model.version,
        "arm": f"batch:{alias}",
        "mode": mode,
        "machine_type": name,
    }
    if lake.committed_position(app_id, "predictions") >= version + 1:
        return {**summary, "rows": 0, "skipped": "already scored", "seconds": time.perf_counter() - started}
    spec = model.bundle.spec
    have = set(lake.columns("telemetry"))
    telemetry = lake.read(
        "telemetry",
        version=version,
        columns=["machine_id", "ts", "seq", "bus_position", *(c for c in spec.inputs if c in have)],
        machine_ids=members,
    ).with_columns(pl.lit(None, pl.Float64).alias(c) for c in spec.inputs if c not in have)
    events = lake.read("events", machine_ids=members)
    features = build_features(telemetry, spec, events)
    if latest:
        features = features.group_by("machine_id").agg(pl.all().sort_by("seq").last()).sort("machine_id")
    X = features.select(spec.names).to_numpy()
    rul, lower, upper = (np.empty(len(X)) for _ in range(3))
    for start in range(0, len(X), CHUNK):
        if progress:
            progress(f"rows {start:,}-{min(start + CHUNK, len(X)):,}", start, len(X))
        part = slice(start, start + CHUNK)
        rul[part], lower[part], upper[part] = model.bundle.predict(X[part])
    if progress:
        progress("written", len(X), len(X))
    out = features.select("machine_id", "ts", "seq").with_columns(
        pl.Series("rul", rul),
        pl.Series("rul_lower", lower),
        pl.Series("rul_upper", upper),
        pl.lit(model.name).alias("model_name"),
        pl.lit(model.version).alias("model_version"),
        pl.lit(summary["arm"]).alias("arm"),
        pl.lit(version, pl.Int64).alias("lake_version"),
        pl.lit(datetime.now(UTC)).cast(pl.Datetime("us", "UTC")).alias("scored_at"),
    )
    if out.height:
        lake.append("predictions", out.to_arrow(), app_id=app_id, position=version + 1)
    platform.db.audit("batch", "lake_scored", **summary, rows=out.height)
    return {
        **summary,
        "rows": out.height,
        "machines": out["machine_id"].n_unique(),
        "seconds": time.perf_counter() - started,
    }
