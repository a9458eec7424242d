from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError

from pitstop.errors import LakeError

TS = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("machine_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("seq", pa.int64(), nullable=True),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=True),
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


TABLES = ("telemetry", "events", "quarantine")


class Lake:
    """The lake's tables under one folder. Writes are serialised per process."""

    def __init__(self, root: Path, sensors: list[str]) -> None:
        self.root = Path(root)
        self.sensors = list(sensors)
        self._lock = threading.Lock()
        self._schemas = {
            "telemetry": telemetry_schema(self.sensors),
            "events": EVENTS_SCHEMA,
            "quarantine": quarantine_schema(self.sensors),
        }
        self._partitions: dict[str, list[str] | None] = {
            "telemetry": ["day"],
            "events": None,
            "quarantine": ["day"],
        }
        self._writers: dict[str, DeltaTable] = {}  # kept open for appends, refreshed incrementally

    def path(self, table: str) -> str:
        return str(self.root / table)

    def ensure(self) -> None:
        """Create the tables that do not exist yet (empty, version 0)."""
        for name, schema in self._schemas.items():
            if not DeltaTable.is_deltatable(self.path(name)):
                self.root.mkdir(parents=True, exist_ok=True)
                try:
                    DeltaTable.create(self.path(name), schema, partition_by=self._partitions[name], name=name)
                except DeltaError as exc:
                    raise LakeError(f"cannot create lake table {name}: {exc}") from exc

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        if name not in self._schemas:
            raise LakeError(f"unknown lake table {name!r}; tables are {sorted(self._schemas)}")
        try:
            return DeltaTable(self.path(name), version=version)
        except DeltaError as exc:
            raise LakeError(f"cannot open lake table {name} at version {version}: {exc}") from exc

    def version(self, name: str = "telemetry") -> int:
        return int(self.table(name).version())

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
            except DeltaError as exc:
                raise LakeError(f"cannot refresh lake table {name}: {exc}") from exc
        return dt

    def append(
        self, name: str, data: pa.Table, *, app_id: str | None = None, position: int | None = None
    ) -> bool:
        """Append rows. With ``app_id`` and ``position`` the commit is idempotent: a position at or
        below the table's recorded one for that app is skipped. Returns whether rows were written."""
        data = data.select(self._schemas[name].names).cast(self._schemas[name])
        props = None
        with self._lock:
            dt = self._writer(name)
            if app_id is not None and position is not None:
                if (dt.transaction_version(app_id) or 0) >= position:
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
            except DeltaError as exc:
                raise LakeError(f"append to lake table {name} failed: {exc}") from exc
        return True

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        columns: list[str] | None = None,
        machine_ids: list[str] | None = None,
    ) -> pl.DataFrame:
        dt = self.table(name, version)
        filters = [("machine_id", "in", list(machine_ids))] if machine_ids else None
        try:
            arrow = dt.to_pyarrow_table(columns=columns, filters=filters)
        except DeltaError as exc:
            raise LakeError(f"read of lake table {name} failed: {exc}") from exc
        frame = pl.from_arrow(arrow)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def count(self, name: str, version: int | None = None) -> int:
        return int(self.table(name, version).count())
