"""Lake events written with the ops-DB change that causes them, then appended exactly once.

Closing a work order changes the order (ops DB) and records a ``maintenance`` or ``inspection``
event (the lake); an admin event is recorded with its audit row: two stores, no shared
transaction. So the event is written to ``lake_outbox`` in the ops-DB transaction of its cause
(under an idempotency key when the caller may send it twice), and ``drain`` appends pending rows
to the lake's ``events`` table in one Delta commit that carries the highest outbox id as an app
transaction (``ops-outbox``). A crash between the append and marking the rows done leaves them
pending; the next drain sees from the table's recorded transaction that they are in the lake
already, marks them and appends only the rows after them. Nothing accepted is lost, nothing is appended twice.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from pitstop.errors import ValidationError
from pitstop.lake.tables import EVENTS_SCHEMA, Lake
from pitstop.store import Database, LakeOutbox, utcnow

log = logging.getLogger(__name__)

APP_ID = "ops-outbox"
DRAIN_LOCK = "lake_outbox.drain"
_TIME_FIELDS = ("ts",)


def enqueue(
    session: Session,
    table: str,
    row: dict[str, Any],
    *,
    key: str | None = None,
    request_hash: str | None = None,
) -> None:
    """Write ``row`` for the lake's ``table`` inside the caller's transaction. With ``key`` the
    row is stored once: a second row with the same key fails the transaction (unique index). A row
    the lake table cannot hold is refused here, before anything commits, so it can never block
    the drain."""
    if table == "events":
        try:
            pa.Table.from_pylist([row], schema=EVENTS_SCHEMA)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise ValidationError(
                f"the event does not fit the lake's events table: {exc}", code="invalid_event"
            ) from None
    payload = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
    if session.get_bind().dialect.name == "postgresql":
        # ids must commit in their order: the drain takes ids at or below the lake's position as
        # written, so a row committing after a higher id was drained would never reach the lake.
        # Enqueuers take turns with each other and with the drain (the same lock) until they commit.
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": DRAIN_LOCK})
    session.add(
        LakeOutbox(
            table_name=table,
            payload=json.dumps(payload),
            created_at=utcnow(),
            idem_key=key,
            request_hash=request_hash,
        )
    )


def keyed(session: Session, key: str) -> tuple[dict[str, Any], str | None] | None:
    """The row stored under ``key`` and the hash of the request that stored it, if any."""
    found = session.execute(
        select(LakeOutbox.payload, LakeOutbox.request_hash).where(LakeOutbox.idem_key == key)
    ).first()
    if found is None:
        return None
    return _decode(found.payload), found.request_hash


class Outbox:
    """Drains ``lake_outbox`` into the lake, one table at a time (only ``events`` today)."""

    def __init__(self, db: Database, lake: Lake, batch: int = 1000) -> None:
        self.db = db
        self.lake = lake
        self.batch = batch
        self._lock = threading.Lock()

    def reserve_ids(self) -> None:
        """Start new outbox ids above the highest the lake holds. Ids are never reused within one
        ops DB (SQLite's AUTOINCREMENT, PostgreSQL's sequence); this covers an ops DB restored
        from before rows the lake has (a new row must never look as if it were in the lake already)."""
        committed = self.lake.committed_position(APP_ID, "events")
        if committed <= 0:
            return
        with self.db.session() as s:
            moved = (_reserve_sqlite if self.db.is_sqlite else _reserve_postgres)(s, committed)
        if moved:
            log.warning("lake outbox ids start after %d, the highest the lake holds", committed)

    def drain(self) -> int:
        """Append the pending rows; returns how many reached the lake now. One drain at a time,
        in this process and (PostgreSQL) across the processes sharing the ops DB: two would read
        the same pending rows before either committed them and append them twice."""
        with self._lock, self.db.exclusive(DRAIN_LOCK):
            appended = 0
            while True:
                read, done = self._drain_once()
                appended += done
                if read < self.batch:
                    return appended

    def _drain_once(self) -> tuple[int, int]:
        """One batch: (rows read, rows appended to the lake)."""
        with self.db.session() as s:
            rows = s.execute(
                select(LakeOutbox.id, LakeOutbox.payload)
                .where(LakeOutbox.appended_at.is_(None), LakeOutbox.table_name == "events")
                .order_by(LakeOutbox.id)
                .limit(self.batch)
            ).all()
        if not rows:
            return 0, 0
        committed = self.lake.committed_position(APP_ID, "events")
        fresh = [(row_id, payload) for row_id, payload in rows if row_id > committed]
        unfit: list[int] = []
        if fresh:
            decoded, unfit = _fitting(fresh)
            if unfit:  # written before enqueue checked rows: set aside, never retried forever
                log.error("lake outbox rows %s cannot be stored in the events table; set aside", unfit)
            if decoded:
                table = pa.Table.from_pylist(decoded, schema=EVENTS_SCHEMA)
                self.lake.append("events", table, app_id=APP_ID, position=fresh[-1][0])
        self._mark_appended([row_id for row_id, _ in rows])
        if len(rows) > len(fresh):
            log.info(
                "%d outbox rows were in the lake already (an earlier drain stopped)", len(rows) - len(fresh)
            )
        return len(rows), len(fresh) - len(unfit)

    def _mark_appended(self, ids: list[int]) -> None:
        with self.db.session() as s:
            s.execute(update(LakeOutbox).where(LakeOutbox.id.in_(ids)).values(appended_at=utcnow()))

    def pending(self) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(select(func.count()).select_from(LakeOutbox).where(LakeOutbox.appended_at.is_(None)))
                or 0
            )


def _fitting(rows: list[tuple[int, str]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows the events table can hold, and the ids of those it cannot."""
    good, bad = [], []
    for row_id, payload in rows:
        row = _decode(payload)
        try:
            pa.Table.from_pylist([row], schema=EVENTS_SCHEMA)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            bad.append(row_id)
            continue
        good.append(row)
    return good, bad


def _decode(payload: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(payload)
    for field in _TIME_FIELDS:
        if isinstance(row.get(field), str):
            row[field] = datetime.fromisoformat(row[field])
    return row


def _reserve_sqlite(s: Session, committed: int) -> bool:
    current = s.execute(text("SELECT seq FROM sqlite_sequence WHERE name = 'lake_outbox'")).scalar()
    if current is None:
        s.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES ('lake_outbox', :seq)"), {"seq": committed}
        )
        return False
    if current < committed:
        s.execute(
            text("UPDATE sqlite_sequence SET seq = :seq WHERE name = 'lake_outbox'"), {"seq": committed}
        )
        return True
    return False


def _reserve_postgres(s: Session, committed: int) -> bool:
    """The id column's sequence moved past ``committed`` (``setval``: the next id is one more)."""
    sequence = s.execute(text("SELECT pg_get_serial_sequence('lake_outbox', 'id')")).scalar_one()
    # the sequence's name comes from the catalog, not from input
    last, called = s.execute(text(f"SELECT last_value, is_called FROM {sequence}")).one()
    following = last + 1 if called else last
    if following > committed:
        return False
    s.execute(text("SELECT setval(:sequence, :value)"), {"sequence": sequence, "value": committed})
    return True
