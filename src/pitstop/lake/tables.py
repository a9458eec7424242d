from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError
from deltalake.schema import Field as DeltaField

from pitstop.errors import LakeError
from pitstop.lake.location import LakeLocation

TS = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("machine_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("seq", pa.int64(), nullable=True),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=True),
        pa.field("component", pa.string(), nullable=True),  # the part that failed or was serviced
    ]
)


def telemetry_schema(sensors: list[str]) -> pa.Schema:
    """Wide telemetry: one float column per sensor of any machine type, partitioned by day."""
    return pa.schema(
        [
            pa.field("machine_id", pa.string(), nullable=False),
            pa.field("ts", TS, nullable=False),
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("day", pa.date32(), nullable=False),
            pa.field("bus_position", pa.int64(), nullable=True),
            *[pa.field(name, pa.float64(), nullable=True) for name in sensors],
        ]
    )


def quarantine_schema(sensors: list[str]) -> pa.Schema:
    """Readings accepted but held out of the clean lake, with the reason (e.g. out of range)."""
    base = telemetry_schema(sensors)
    return base.insert(4, pa.field("reason", pa.string(), nullable=False))


PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("machine_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("rul", pa.float64(), nullable=False),
        pa.field("rul_lower", pa.float64(), nullable=False),
        pa.field("rul_upper", pa.float64(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("lake_version", pa.int64(), nullable=False),
        pa.field("scored_at", TS, nullable=False),
    ]
)


class Lake:
    """The lake's tables under one root: a local folder or ``s3://bucket/prefix`` (a
    ``LakeLocation`` with its storage options). Writes are serialised per process; writers in other
    processes are safe too (Delta's optimistic commits; on S3, conditional puts: see ``location``)."""

    def __init__(self, root: str | Path | LakeLocation, sensors: list[str]) -> None:
        self.location = LakeLocation.of(root)
        self.sensors = list(sensors)
        self._lock = threading.Lock()
        self._schemas = {
            "telemetry": telemetry_schema(self.sensors),
            "events": EVENTS_SCHEMA,
            "quarantine": quarantine_schema(self.sensors),
            "predictions": PREDICTIONS_SCHEMA,
        }
        self._partitions: dict[str, list[str] | None] = {
            "telemetry": ["day"],
            "events": None,
            "quarantine": ["day"],
            "predictions": ["lake_version"],
        }
        self._writers: dict[str, DeltaTable] = {}  # kept open for appends, refreshed incrementally

    @property
    def root(self) -> str:
        return self.location.uri

    def path(self, table: str) -> str:
        return self.location.join(table)

    def ensure(self) -> None:
        """Create the tables that do not exist yet (empty, version 0), and add the columns an
        existing table lacks (a sensor new to the fleet, a new event field): a metadata-only
        commit; no file is rewritten and every row keeps its values (null in the new column).

        Make the tables from one process before others start: delta-rs lets two creates racing on
        a new table both commit (a second CREATE TABLE at version 1, seen on S3 and local disk)."""
        for name, schema in self._schemas.items():
            if not self.location.is_table(name):
                self.location.prepare()
                try:
                    DeltaTable.create(
                        self.path(name),
                        schema,
                        partition_by=self._partitions[name],
                        name=name,
                        storage_options=self.location.storage_options,
                    )
                except (DeltaError, OSError) as exc:
                    if self.location.is_table(name):  # another process made it meanwhile
                        self._add_columns(name, schema)
                        continue
                    raise LakeError(f"cannot create lake table {name}: {exc}") from exc
                continue
            self._add_columns(name, schema)

    def _add_columns(self, name: str, schema: pa.Schema) -> list[str]:
        with self._lock:
            dt = self._writer(name)
            have = set(pa.schema(dt.schema()).names)
            new = [f for f in schema if f.name not in have]
            if not new:
                return []
            try:
                dt.alter.add_columns([DeltaField.from_arrow(f.with_nullable(True)) for f in new])
                dt.update_incremental()
            except (DeltaError, OSError) as exc:
                raise LakeError(
                    f"cannot add columns {[f.name for f in new]} to lake table {name}: {exc}"
                ) from exc
        return [f.name for f in new]

    def add_sensors(self, sensors: list[str]) -> list[str]:
        """Evolve ``telemetry`` and ``quarantine`` to hold ``sensors`` too; returns the new ones."""
        new = [s for s in sensors if s not in self.sensors]
        if not new:
            return []
        self.sensors = [*self.sensors, *new]
        self._schemas["telemetry"] = telemetry_schema(self.sensors)
        self._schemas["quarantine"] = quarantine_schema(self.sensors)
        for name in ("telemetry", "quarantine"):
            self._add_columns(name, self._schemas[name])
        return new

    def columns(self, name: str) -> list[str]:
        """The columns a table has now (its schema may be wider than this process's fleet)."""
        with self._lock:
            return list(pa.schema(self._writer(name).schema()).names)

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        if name not in self._schemas:
            raise LakeError(f"unknown lake table {name!r}; tables are {sorted(self._schemas)}")
        try:
            return DeltaTable(self.path(name), version=version, storage_options=self.location.storage_options)
        except (DeltaError, OSError) as exc:
            raise LakeError(f"cannot open lake table {name} at version {version}: {exc}") from exc

    def version(self, name: str = "telemetry") -> int:
        """The newest version (from the kept-open table: reads only the commits since the last call)."""
        with self._lock:
            return int(self._writer(name).version())

    def committed_position(self, app_id: str, name: str = "telemetry") -> int:
        """The last bus position an app committed to this table (0 if none)."""
        with self._lock:
            return int(self._writer(name).transaction_version(app_id) or 0)

    def _writer(self, name: str) -> DeltaTable:
        """The table for appends, brought up to date (reads only the commits since the last call)."""
        dt = self._writers.get(name)
        if dt is None:
            dt = self._writers[name] = self.table(name)
        else:
            try:
                dt.update_incremental()
            except (DeltaError, OSError) as exc:
                raise LakeError(f"cannot refresh lake table {name}: {exc}") from exc
        return dt

    def append(
        self,
        name: str,
        data: pa.Table,
        *,
        app_id: str | None = None,
        position: int | None = None,
        skip_committed: str | None = None,
    ) -> bool:
        """Append rows. With ``app_id`` and ``position`` the commit is idempotent: a position at or
        below the table's recorded one for that app is skipped; with ``skip_committed`` (a column of
        bus positions) rows at or below it are dropped, read from the same table version as that
        check. Returns whether rows were written."""
        props = None
        with self._lock:
            dt = self._writer(name)
            schema = pa.schema(dt.schema())  # may have columns this process does not know yet
            missing = [f for f in schema if f.name not in data.column_names]
            for f in missing:
                if not f.nullable and f.name in self._schemas[name].names:
                    raise LakeError(f"append to lake table {name}: column {f.name} is required")
                data = data.append_column(f.name, pa.nulls(data.num_rows, f.type))
            data = data.select(schema.names).cast(schema)
            if app_id is not None and position is not None:
                committed = dt.transaction_version(app_id) or 0
                if committed >= position:
                    return False
                if skip_committed is not None:
                    data = data.filter(pc.greater(data[skip_committed], committed))
                    if data.num_rows == 0:
                        return False
                props = CommitProperties(app_transactions=[Transaction(app_id, position)])
            try:
                write_deltalake(
                    dt,
                    data,
                    mode="append",
                    partition_by=self._partitions[name],
                    commit_properties=props,
                )
            except (DeltaError, OSError) as exc:
                raise LakeError(f"append to lake table {name} failed: {exc}") from exc
        return True

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
        machine_ids: list[str] | None = None,
        after_position: int | None = None,
    ) -> pl.DataFrame:
        """Rows of a table, now or at a version or a point in time (time travel); with
        ``after_position``, only rows from bus positions past it (files are skipped by their stats)."""
        dt = self.table(name, version)
        if as_of is not None:
            if version is not None:
                raise LakeError("pass a version or a time, not both")
            try:
                dt.load_as_version(as_of)
            except (DeltaError, OSError, ValueError) as exc:
                raise LakeError(f"table {name} has no version at {as_of.isoformat()}: {exc}") from exc
        filters: list[tuple[str, str, Any]] = [("machine_id", "in", list(machine_ids))] if machine_ids else []
        if after_position is not None:
            filters.append(("bus_position", ">", after_position))
        try:
            arrow = dt.to_pyarrow_table(columns=columns, filters=filters or None)
        except (DeltaError, OSError) as exc:
            raise LakeError(f"read of lake table {name} failed: {exc}") from exc
        frame = pl.from_arrow(arrow)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def count(self, name: str, version: int | None = None) -> int:
        return int(self.table(name, version).count())

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits of a table, newest first: version, time, operation, rows added."""
        out = []
        for entry in self.table(name).history(limit):
            metrics = entry.get("operationMetrics") or {}
            out.append(
                {
                    "version": entry.get("version"),
                    "timestamp": datetime.fromtimestamp(entry["timestamp"] / 1000, tz=UTC).isoformat(),
                    "operation": entry.get("operation"),
                    "rows_added": metrics.get("num_added_rows"),
                    "files_added": metrics.get("num_added_files"),
                }
            )
        return out

    def compact(self, name: str) -> dict[str, Any]:
        """Rewrite small files into large ones (a new table version; old files stay until vacuum)."""
        with self._lock:
            try:
                result = self._writer(name).optimize.compact()
            except (DeltaError, OSError) as exc:
                raise LakeError(f"compaction of {name} failed: {exc}") from exc
        return {k: result.get(k) for k in ("numFilesAdded", "numFilesRemoved", "partitionsOptimized")}

    def vacuum(
        self,
        name: str,
        retention_hours: int = 168,
        dry_run: bool = True,
        keep_versions: list[int] | None = None,
    ) -> list[str]:
        """Files no longer referenced by versions newer than the retention, nor by any of
        ``keep_versions`` (deleted unless dry_run).

        Time travel to other versions older than the retention stops working once they are deleted.
        """
        with self._lock:
            try:
                return list(
                    self._writer(name).vacuum(
                        retention_hours=retention_hours,
                        dry_run=dry_run,
                        enforce_retention_duration=False,
                        keep_versions=sorted(keep_versions) if keep_versions else None,
                    )
                )
            except (DeltaError, OSError) as exc:
                raise LakeError(f"vacuum of {name} failed: {exc}") from exc

    def delete(self, name: str, predicate: str) -> int:
        with self._lock:
            try:
                metrics = self._writer(name).delete(predicate)
            except (DeltaError, OSError) as exc:
                raise LakeError(f"delete from {name} failed: {exc}") from exc
        return int(metrics.get("num_deleted_rows", 0) or 0)
