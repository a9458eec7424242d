from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from pitstop.bus.base import Message
from pitstop.errors import BusError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
"""


class _Slot:
    __slots__ = ("done", "error", "payload", "position")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.position: int | None = None
        self.error: sqlite3.Error | None = None
        self.done = False


class SqliteBus:
    """Embedded bus: an append-only SQLite table in WAL mode with ``synchronous=FULL``.

    A publish is one committed transaction, so an acknowledged batch survives a crash or power loss.
    One writer connection (serialised by a lock) and one reader connection per thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the writer
        self._queue_lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._local = threading.local()
        try:
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BusError(f"cannot open bus at {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def publish(self, payload: bytes, key: str | None = None) -> int:
        """Append one message (one log: ``key`` is not needed); returns once it is committed (fsynced).

        Group commit: publishers queue their payload, and whoever takes the writer lock commits
        every queued payload in one transaction (one fsync), then hands each its position.
        """
        slot = _Slot(payload)
        with self._queue_lock:
            self._queue.append(slot)
        with self._lock:
            if not slot.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_batch(batch)
        if slot.error is not None:
            raise BusError(f"bus write failed: {slot.error}; the batch was not accepted, retry it")
        assert slot.position is not None
        return slot.position

    def _commit_batch(self, batch: list[_Slot]) -> None:
        try:
            self._writer.execute("BEGIN IMMEDIATE")
            positions = []
            for slot in batch:
                cur = self._writer.execute("INSERT INTO messages(payload) VALUES (?)", (slot.payload,))
                positions.append(cur.lastrowid)
            self._writer.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("ROLLBACK")
            for slot in batch:
                slot.error = exc
                slot.done = True
            return
        for slot, position in zip(batch, positions, strict=True):
            slot.position = position
            slot.done = True

    def read(self, consumer: str, max_messages: int) -> list[Message]:
        after = self.position(consumer)
        rows = self._reader().execute(
            "SELECT position, payload FROM messages WHERE position > ? ORDER BY position LIMIT ?",
            (after, max_messages),
        )
        return [Message(position, bytes(payload)) for position, payload in rows]

    def commit(self, consumer: str, position: int) -> None:
        with self._lock:
            self._writer.execute(
                "INSERT INTO consumers(name, position) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET position = excluded.position",
                (consumer, position),
            )

    def position(self, consumer: str) -> int:
        row = self._reader().execute("SELECT position FROM consumers WHERE name = ?", (consumer,)).fetchone()
        return int(row[0]) if row else 0

    def head(self) -> int:
        row = self._reader().execute("SELECT MAX(position) FROM messages").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        with self._lock:
            self._writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
