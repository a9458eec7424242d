"""Held-out machines for evaluation: each cut at a random reading of its first life, with the
truth (time from the cut to the failure, and the failed component)."""

from __future__ import annotations

import numpy as np
import polars as pl


def cut_before_failure(
    readings: pl.DataFrame, events: pl.DataFrame, *, seed: int, unit_seconds: float = 3600.0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each machine's readings up to a random point (after the first third) of its life before its
    first failure, and the truth ``machine_id, rul, component`` (RUL in units of ``unit_seconds``
    from its last kept reading). Machines with no failure are left out."""
    rng = np.random.default_rng(seed)
    ends = events.filter(pl.col("kind").is_in(["failure", "maintenance"])).sort("ts")
    kept, truth = [], []
    for (machine_id,), group in readings.sort("machine_id", "ts").group_by("machine_id", maintain_order=True):
        mine = ends.filter(pl.col("machine_id") == machine_id)
        if mine.height == 0 or mine["kind"][0] != "failure":
            continue  # only a life that ended in a failure has a known RUL
        first = mine.row(0, named=True)
        life = group.filter(pl.col("ts") <= first["ts"])
        if life.height < 3:
            continue
        cut = int(rng.integers(max(1, life.height // 3), life.height))
        part = life[:cut]
        rul = (first["ts"] - part["ts"][-1]).total_seconds() / unit_seconds
        kept.append(part)
        truth.append((str(machine_id), float(rul), first.get("component")))
    if not kept:
        raise ValueError("no machine failed in the simulated period: simulate more days")
    frame = pl.DataFrame(
        truth, schema={"machine_id": pl.String, "rul": pl.Float64, "component": pl.String}, orient="row"
    )
    return pl.concat(kept), frame
