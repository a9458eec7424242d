"""Import a fleet's past events (failures, maintenance, inspections) from CSV or Parquet.

Each row: ``machine_id``, ``ts``, ``kind``, optionally ``component`` and ``detail``. A row is
rejected (reject file, with its code) for a bad timestamp, a kind that is not one of
``failure | maintenance | inspection``, a machine that is not registered (import its readings
first), or a component its machine type does not declare. Idempotent on (machine, ts, kind). The
rows are appended to the lake's ``events`` table in one commit, ``seq`` left empty: labels place
an event by its time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from deltalake.exceptions import DeltaError

from pitstop.errors import LakeError, ValidationError
from pitstop.ingest.history import registered_types
from pitstop.ingest.history_read import (
    MACHINE_ID_RULE,
    TS_TYPE,
    HistoryFile,
    as_text,
    machine_ids,
    parse_timestamps,
    rejects_path,
    timestamp_codes,
    timestamp_reason,
    valid_machine_id,
    write_rejects,
)
from pitstop.lake import Lake
from pitstop.schema import EVENT_KINDS, FleetSchema
from pitstop.store import Database

_REQUIRED = ("machine_id", "ts", "kind")
_OPTIONAL = ("component", "detail")
_KEYS = ["machine_id", "ts", "kind"]


@dataclass(frozen=True)
class EventsImport:
    """What an events import did. ``rows`` = ``stored + duplicates + rejected``."""

    rows: int
    stored: int
    duplicates: int
    rejected: int
    seconds: float
    rejects_file: Path | None
    components_dropped: int = 0  # components given while the lake's events table has no column for them

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "rejects_file": str(self.rejects_file) if self.rejects_file is not None else None,
        }


def import_events(
    path: Path,
    *,
    lake: Lake,
    db: Database,
    fleet: FleetSchema,
    max_future_skew_s: float,
    rejects: Path | None = None,
) -> EventsImport:
    """Import events from ``path`` (see the module doc). A whole-file problem raises
    ``ValidationError`` before anything is stored; bad rows do not."""
    started = time.perf_counter()
    source = HistoryFile.open(path)
    source.require(_REQUIRED)
    unknown = [c for c in source.columns if c not in _REQUIRED + _OPTIONAL]
    if unknown:
        raise ValidationError(
            f"{path}: unknown column(s) {', '.join(unknown)}; an events file has machine_id, ts, kind "
            "and optionally component and detail (seq is left empty: events are placed by time)",
            code="unknown_column",
        )
    raw = source.read_all()
    if raw.height == 0:  # a header and no rows: nothing to do, and nothing wrong
        return EventsImport(0, 0, 0, 0, time.perf_counter() - started, None)
    horizon = datetime.now(UTC) + timedelta(seconds=max_future_skew_s)
    frame, registered, bad_ids = _parsed(raw, db)
    checked = frame.with_columns(_codes(frame, fleet, registered, bad_ids, horizon).alias("code"))
    bad = checked.filter(pl.col("code").is_not_null())
    good = checked.filter(pl.col("code").is_null()).drop("ts").rename({"_ts": "ts"})

    unique = good.unique(subset=_KEYS, keep="first", maintain_order=True)
    duplicates = good.height - unique.height
    ids = unique.get_column("machine_id").unique().to_list()
    if ids:
        stored = lake.read("events", columns=_KEYS, machine_ids=ids).with_columns(pl.col("ts").cast(TS_TYPE))
        fresh = unique.join(stored, on=_KEYS, how="anti", maintain_order="left")
        duplicates += unique.height - fresh.height
    else:
        fresh = unique
    has_component = "component" in _lake_columns(lake)
    dropped = 0 if has_component else fresh.get_column("component").drop_nulls().len()
    if fresh.height:
        rows = fresh.select(
            "machine_id", "ts", pl.lit(None, pl.Int64).alias("seq"), "kind", "detail", "component"
        )
        lake.append("events", rows.to_arrow())

    reasons = _explain(bad, raw, fleet, max_future_skew_s)
    target = rejects_path(source.path, rejects)
    rejected = write_rejects(target, [reasons])
    result = EventsImport(
        rows=raw.height,
        stored=fresh.height,
        duplicates=duplicates,
        rejected=rejected,
        seconds=time.perf_counter() - started,
        rejects_file=target if rejected else None,
        components_dropped=dropped,
    )
    db.audit(
        "import",
        "events_imported",
        file=str(path),
        **{k: v for k, v in result.to_dict().items() if k != "seconds"},
    )
    return result


def _parsed(raw: pl.DataFrame, db: Database) -> tuple[pl.DataFrame, dict[str, str], list[str]]:
    """The rows numbered (``_row``), ``ts`` parsed (``_ts``, the text kept in ``ts``), empty text
    as null; the registered type of each machine named, and the malformed machine ids."""
    mid = machine_ids(raw)
    ids = mid.unique().drop_nulls().to_list()
    bad_ids = [m for m in ids if not valid_machine_id(m)]
    registered = registered_types(db, [m for m in ids if valid_machine_id(m)])

    def text(name: str) -> pl.Expr:
        if name not in raw.columns:
            return pl.lit(None, pl.String).alias(name)
        col = pl.col(name).cast(pl.String)
        return pl.when(col == "").then(None).otherwise(col).alias(name)

    frame = raw.select(
        pl.int_range(1, raw.height + 1, dtype=pl.Int64).alias("_row"),
        mid.alias("machine_id"),
        parse_timestamps(raw).alias("_ts"),
        "ts",
        pl.col("kind").cast(pl.String),
        text("component"),
        text("detail"),
        mid.replace_strict(registered, default=None, return_dtype=pl.String).alias("_type"),
    )
    return frame, registered, bad_ids


def _codes(
    frame: pl.DataFrame, fleet: FleetSchema, registered: dict[str, str], bad_ids: list[str], horizon: datetime
) -> pl.Expr:
    stamp = timestamp_codes(frame, "_ts", horizon)
    foreign = [
        (pl.col("_type") == name)
        & pl.col("component").is_not_null()
        & ~pl.col("component").is_in(mt.component_names)
        for name, mt in fleet.machine_types.items()
        if mt.component_names
    ]
    chain = (
        pl.when(pl.col("machine_id").is_null() | pl.col("machine_id").is_in(bad_ids))
        .then(pl.lit("invalid_machine_id"))
        .when(stamp.is_not_null())
        .then(stamp)
        .when(~pl.col("kind").is_in(list(EVENT_KINDS)).fill_null(False))
        .then(pl.lit("invalid_kind"))
        .when(~pl.col("machine_id").is_in(list(registered)))
        .then(pl.lit("unknown_machine"))
    )
    if foreign:
        chain = chain.when(pl.any_horizontal(foreign).fill_null(False)).then(pl.lit("unknown_component"))
    return chain


def _explain(
    bad: pl.DataFrame,
    raw: pl.DataFrame,
    fleet: FleetSchema,
    skew_s: float,
) -> pl.DataFrame:
    """The rejected rows as the file had them, with ``row``, ``code`` and ``reason``."""
    if bad.height == 0:
        return pl.DataFrame()
    kinds = ", ".join(EVENT_KINDS)
    components = {name: ", ".join(mt.component_names) for name, mt in fleet.machine_types.items()}
    code = pl.col("code")
    reason = (
        pl.when(code == "invalid_machine_id")
        .then(pl.lit(MACHINE_ID_RULE))
        .when(code.str.ends_with("_timestamp"))
        .then(timestamp_reason(code, skew_s))
        .when(code == "invalid_kind")
        .then(pl.format("kind '{}' is not one of {}", pl.col("kind").fill_null(""), pl.lit(kinds)))
        .when(code == "unknown_machine")
        .then(pl.format("machine {} is not registered: import its readings first", pl.col("machine_id")))
        .when(code == "unknown_component")
        .then(
            pl.format(
                "machine type {} has no component '{}' (its components: {})",
                pl.col("_type"),
                pl.col("component"),
                pl.col("_type").replace_strict(components, default="", return_dtype=pl.String),
            )
        )
    )
    explained = bad.select(pl.col("_row").alias("row"), "code", reason.alias("reason"))
    return pl.concat([as_text(raw[explained.get_column("row") - 1]), explained], how="horizontal")


def _lake_columns(lake: Lake) -> list[str]:
    """The columns the lake's events table has now (the schema may be newer than the code's)."""
    try:
        return [f.name for f in lake.table("events").schema().fields]
    except (DeltaError, LakeError):
        return []
