"""Import a fleet's history of readings from CSV or Parquet files into the lake.

The HTTP intake's validation and codes, row by row and columnar (Polars): bad rows go to a reject
file with their code, out-of-range rows to the ``quarantine`` table with the reason, the rest to
``telemetry``, in one Delta commit per table. Idempotent: a reading already stored (same machine
and ``ts``, in ``telemetry`` or ``quarantine``) is counted as a duplicate, never stored twice.
History is appended in time order per machine, so a reading older than its machine's newest stored
one is rejected (``before_stored_history``). Seqs continue after each machine's highest; new
machines are registered and the machine state records the last seq, so live devices go on from it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import select

from pitstop.errors import ValidationError
from pitstop.ingest.history_check import Checker, Layout
from pitstop.ingest.history_read import HistoryFile, Progress, rejects_path, write_rejects
from pitstop.ingest.validate import _out_of_range
from pitstop.lake import Lake
from pitstop.schema import FleetSchema
from pitstop.store import Database, Machine, MachineState, utcnow

_KEYS = ["machine_id", "ts"]
_ID_BATCH = 500  # machine ids per SQL IN (...)


@dataclass(frozen=True)
class ReadingsImport:
    """What an import did. ``rows`` = ``stored + quarantined + duplicates + rejected``."""

    rows: int
    stored: int
    quarantined: int
    duplicates: int
    rejected: int
    machines: int  # machines with at least one valid row in the files
    seconds: float
    rejects_files: tuple[Path, ...]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        files = [str(p) for p in self.rejects_files]
        return {
            "rows": self.rows,
            "stored": self.stored,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "machines": self.machines,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s),
            "rejects_file": None if not files else files[0] if len(files) == 1 else files,
        }


def import_readings(
    files: Sequence[Path],
    *,
    lake: Lake,
    db: Database,
    fleet: FleetSchema,
    max_future_skew_s: float,
    machine_type: str | None = None,
    rejects: Path | None = None,
    progress: Progress | None = None,
) -> ReadingsImport:
    """Import readings from ``files`` (see the module doc). A whole-file problem (unreadable, a
    column missing or no sensor, an unknown ``machine_type``) raises ``ValidationError`` before
    anything is stored; bad rows do not."""
    started = time.perf_counter()
    if machine_type is not None and machine_type not in fleet.machine_types:
        raise ValidationError(
            f"unknown machine type {machine_type!r}; the fleet has {', '.join(sorted(fleet.machine_types))}",
            code="unknown_machine_type",
        )
    layouts = [Layout.of(HistoryFile.open(f), i, fleet, machine_type) for i, f in enumerate(files)]
    horizon = datetime.now(UTC) + timedelta(seconds=max_future_skew_s)
    checker = Checker(fleet, horizon, max_future_skew_s, lambda ids: registered_types(db, ids))
    valid: list[pl.DataFrame] = []
    rejected: dict[int, list[pl.DataFrame]] = {}
    rows = 0
    for layout in layouts:
        offset = 0
        for chunk in layout.file.chunks(progress, numeric=layout.sensors):
            good, bad = checker.check(chunk, layout, offset)
            offset += chunk.frame.height
            valid.append(good)
            if bad.height:
                rejected.setdefault(layout.index, []).append(bad)
        rows += offset
    batch = _Batch.of(valid, fleet)
    late = batch.settle(lake)
    for index, numbers in late.items():
        again = layouts[index].file.rows(numbers)
        reason = (
            "older than the newest reading already stored for its machine: history is imported in time order"
        )
        again = again.with_columns(code=pl.lit("before_stored_history"), reason=pl.lit(reason))
        rejected.setdefault(index, []).append(again)
    stored, quarantined = batch.write(lake, db)
    written = _write_rejects(layouts, rejected, rejects)
    result = ReadingsImport(
        rows=rows,
        stored=stored,
        quarantined=quarantined,
        duplicates=batch.duplicates,
        rejected=sum(n for _, n in written),
        machines=batch.machines,
        seconds=time.perf_counter() - started,
        rejects_files=tuple(p for p, n in written if n),
    )
    db.audit(
        "import",
        "readings_imported",
        file=", ".join(str(f) for f in files),
        **{k: v for k, v in result.to_dict().items() if k not in ("seconds", "rows_per_s")},
    )
    return result


class _Batch:
    """The valid rows of an import: deduplicated against each other and the lake, then written."""

    def __init__(self, frame: pl.DataFrame, fleet: FleetSchema) -> None:
        self.fleet = fleet
        self.frame = frame
        self.duplicates = 0
        self.machines = frame.get_column("machine_id").n_unique() if frame.height else 0
        self.stored_max = pl.DataFrame(
            schema={"machine_id": pl.String, "_newest": pl.Datetime("us", "UTC"), "_top": pl.Int64}
        )
        # each machine's first valid reading in the import and its type
        self.first_ts = frame.group_by("machine_id").agg(
            pl.col("ts").min().alias("_first"), pl.col("_type").first()
        )

    @classmethod
    def of(cls, chunks: list[pl.DataFrame], fleet: FleetSchema) -> _Batch:
        frame = pl.concat(chunks, how="diagonal") if chunks else pl.DataFrame()
        if frame.height == 0:
            frame = pl.DataFrame(
                schema={
                    "_file": pl.Int32,
                    "_row": pl.Int64,
                    "machine_id": pl.String,
                    "ts": pl.Datetime("us", "UTC"),
                    "_type": pl.String,
                }
            )
        return cls(frame, fleet)

    def settle(self, lake: Lake) -> dict[int, pl.Series]:
        """Drop repeats within the import and readings already stored; returns the row numbers (per
        file) of readings older than their machine's stored history, which are dropped too."""
        frame = self.frame.sort("machine_id", "ts", "_file", "_row")
        repeat = (pl.col("machine_id") == pl.col("machine_id").shift(1)) & (
            pl.col("ts") == pl.col("ts").shift(1)
        )
        first = frame.filter(~repeat.fill_null(False))
        self.duplicates = frame.height - first.height
        ids = self.first_ts.get_column("machine_id").to_list()
        stored = _stored(lake, ids)
        late: dict[int, pl.Series] = {}
        if stored.height:
            self.stored_max = stored.group_by("machine_id").agg(
                pl.col("ts").max().alias("_newest"), pl.col("seq").max().alias("_top")
            )
            fresh = first.join(stored.select(_KEYS), on=_KEYS, how="anti")
            self.duplicates += first.height - fresh.height
            fresh = fresh.join(self.stored_max.select("machine_id", "_newest"), on="machine_id", how="left")
            old = pl.col("ts") < pl.col("_newest")
            before = fresh.filter(old)
            for index in before.get_column("_file").unique().to_list():
                late[index] = before.filter(pl.col("_file") == index).get_column("_row")
            first = fresh.filter(~old.fill_null(False)).drop("_newest").sort("machine_id", "ts")
        self.frame = first
        return late

    def write(self, lake: Lake, db: Database) -> tuple[int, int]:
        """Assign seqs, split out-of-range rows, append (one commit per table), update the ops DB.
        Returns (stored in telemetry, quarantined)."""
        machines = self.first_ts.get_column("machine_id").to_list()
        states = _states(db, machines)
        base = {
            m: max(0, states.get(m, (None, None))[0] or 0, top)
            for m, top in zip(machines, self._stored_top(machines), strict=True)
        }
        frame = self.frame.with_columns(
            (
                pl.col("machine_id").replace_strict(base, default=0, return_dtype=pl.Int64)
                + pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("machine_id")
            ).alias("seq"),
            pl.col("ts").dt.date().alias("day"),
            pl.lit(None, pl.Int64).alias("bus_position"),
            *[pl.lit(None, pl.Float64).alias(s) for s in lake.sensors if s not in self.frame.columns],
        )
        reasons = self._out_of_range(frame)
        held = frame.filter(reasons.is_not_null()).with_columns(reasons.drop_nulls().alias("reason"))
        clean = frame.filter(reasons.is_null())
        if clean.height:
            lake.append("telemetry", clean.to_arrow())
        if held.height:
            lake.append("quarantine", held.to_arrow())
        self._register(db, frame, states)
        return clean.height, held.height

    def _stored_top(self, machines: list[str]) -> list[int]:
        top = dict(self.stored_max.select("machine_id", "_top").iter_rows())
        return [int(top.get(m) or 0) for m in machines]

    def _out_of_range(self, frame: pl.DataFrame) -> pl.Series:
        """The quarantine reason per row (null when every value is in range), as intake words it."""
        reasons = pl.Series("reason", [None] * frame.height, dtype=pl.String)
        if frame.height == 0:
            return reasons
        for name, mt in self.fleet.machine_types.items():
            outside = pl.any_horizontal(
                [(pl.col(s.name) < s.low) | (pl.col(s.name) > s.high) for s in mt.sensors]
            )
            hits = frame.select(((pl.col("_type") == name) & outside.fill_null(False)).arg_true()).to_series()
            if hits.len() == 0:
                continue
            subset = frame[hits]
            columns = {s: subset.get_column(s).to_numpy().astype(np.float64) for s in mt.sensor_names}
            notes = _out_of_range(columns, mt, subset.height)
            reasons = reasons.scatter(hits, pl.Series(notes, dtype=pl.String))
        return reasons

    def _register(
        self, db: Database, frame: pl.DataFrame, states: dict[str, tuple[int | None, datetime | None]]
    ) -> None:
        """Register new machines (type, installed at their first reading) and move each machine's
        state to its newest stored seq and time, so live readings continue after the import."""
        newest = frame.group_by("machine_id").agg(pl.col("seq").max(), pl.col("ts").max())
        stored = self.stored_max.rename({"_top": "_seq0", "_newest": "_ts0"})
        summary = (
            self.first_ts.join(newest, on="machine_id", how="left")
            .join(stored, on="machine_id", how="left")
            .select(
                "machine_id",
                "_type",
                "_first",
                pl.max_horizontal("seq", "_seq0").alias("last_seq"),
                pl.max_horizontal("ts", "_ts0").alias("last_ts"),
            )
        )
        now = utcnow()
        with db.session() as s:
            known = set(_registered_in(s, summary.get_column("machine_id").to_list()))
            for machine_id, type_name, first, _, _ in summary.iter_rows():
                if machine_id not in known:
                    s.add(
                        Machine(
                            machine_id=machine_id,
                            machine_type=type_name,
                            status="active",
                            installed_at=first,
                            created_at=now,
                        )
                    )
            s.flush()
            rows = {st.machine_id: st for st in _state_rows(s, summary.get_column("machine_id").to_list())}
            for machine_id, _, _, last_seq, last_ts in summary.iter_rows():
                state = rows.get(machine_id)
                if state is None:
                    state = MachineState(machine_id=machine_id, readings=0)
                    s.add(state)
                if last_seq is not None and (state.last_seq is None or last_seq > state.last_seq):
                    state.last_seq = int(last_seq)
                if last_ts is not None and (state.last_ts is None or last_ts > state.last_ts):
                    state.last_ts = last_ts


def _stored(lake: Lake, machines: list[str]) -> pl.DataFrame:
    """(machine_id, ts, seq) of the readings the lake holds for these machines, clean or held."""
    if not machines:
        return pl.DataFrame(schema={"machine_id": pl.String, "ts": pl.Datetime("us", "UTC"), "seq": pl.Int64})
    parts = [
        lake.read(t, columns=["machine_id", "ts", "seq"], machine_ids=machines)
        for t in ("telemetry", "quarantine")
    ]
    return pl.concat([p.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))) for p in parts])


def registered_types(db: Database, machines: list[str]) -> dict[str, str]:
    """The machine type of each of these machines that is registered in the ops DB."""
    if not machines:
        return {}
    with db.session() as s:
        return _registered_in(s, machines)


def _registered_in(session: Any, machines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(machines), _ID_BATCH):
        part = machines[i : i + _ID_BATCH]
        query = select(Machine.machine_id, Machine.machine_type).where(Machine.machine_id.in_(part))
        out.update({m: t for m, t in session.execute(query).all()})
    return out


def _state_rows(session: Any, machines: list[str]) -> list[MachineState]:
    out: list[MachineState] = []
    for i in range(0, len(machines), _ID_BATCH):
        part = machines[i : i + _ID_BATCH]
        out.extend(session.scalars(select(MachineState).where(MachineState.machine_id.in_(part))))
    return out


def _states(db: Database, machines: list[str]) -> dict[str, tuple[int | None, datetime | None]]:
    with db.session() as s:
        return {st.machine_id: (st.last_seq, st.last_ts) for st in _state_rows(s, machines)}


def _write_rejects(
    layouts: list[Layout], rejected: dict[int, list[pl.DataFrame]], chosen: Path | None
) -> list[tuple[Path, int]]:
    """One reject file per input (``<FILE>.rejects.csv``), or all into ``chosen`` (with a ``file``
    column when there are several inputs)."""
    if chosen is not None:
        several = len(layouts) > 1
        frames = [
            f.with_columns(pl.lit(str(layouts[i].file.path)).alias("file")) if several else f
            for i, fs in sorted(rejected.items())
            for f in fs
        ]
        return [(chosen, write_rejects(chosen, frames))]
    return [
        (
            rejects_path(layout.file.path, None),
            write_rejects(rejects_path(layout.file.path, None), rejected.get(layout.index, [])),
        )
        for layout in layouts
    ]
