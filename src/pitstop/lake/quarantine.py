from __future__ import annotations

import polars as pl

from pitstop.lake.tables import Lake

RELEASE_APP = "quarantine-release"


def list_quarantine(lake: Lake, machine_id: str | None = None, limit: int = 100) -> pl.DataFrame:
    frame = lake.read("quarantine", machine_ids=[machine_id] if machine_id else None)
    return frame.sort("ts", descending=True).head(limit)


def release(lake: Lake, machine_id: str | None = None, seqs: list[int] | None = None) -> int:
    """Move quarantined readings (all, a machine's, or some seqs of it) into ``telemetry``.

    For values an operator confirmed as real. Readings already in telemetry are not added twice, so
    a release interrupted between its two commits can simply be run again.
    """
    held = lake.read("quarantine", machine_ids=[machine_id] if machine_id else None)
    if seqs:
        held = held.filter(pl.col("seq").is_in(seqs))
    if held.height == 0:
        return 0
    present = lake.read(
        "telemetry", columns=["machine_id", "seq"], machine_ids=held["machine_id"].unique().to_list()
    )
    moving = held.join(present, on=["machine_id", "seq"], how="anti").drop("reason")
    if moving.height:
        lake.append("telemetry", moving.to_arrow())
    keys = " OR ".join(
        f"(machine_id = '{m}' AND seq IN ({', '.join(str(s) for s in group)}))"
        for m, group in held.group_by("machine_id").agg(pl.col("seq")).iter_rows()
    )
    lake.delete("quarantine", keys)
    return held.height
