"""The agent's store-and-forward buffer: one SQLite file in WAL mode with ``synchronous=FULL``.

A reading is committed here (fsynced) before its source is told it was taken, and it leaves only
after the server answered 202 for the batch that carried it. Its ``seq`` is assigned in the same
transaction from a durable counter, so a reading keeps its seq across power losses and a re-send
is a duplicate the server drops.

Each reading keeps the clock it was read with: the boot it happened in, the monotonic clock of that
boot and the wall clock (see ``pitstop.agent.clock``), so its time can be corrected once the server
tells the agent what time it is.

The buffer is bounded (``max_readings``). When it is full, the oldest half of what waits is thinned:
every second reading of it is deleted and the others are marked one ``level`` thinner (so old
readings lose resolution before new ones). Once the oldest readings have been thinned
``max_level`` times, the oldest are dropped instead. Both are counted (``thinned``, ``dropped``),
logged, and shown by ``pitstop agent status``: nothing leaves the buffer silently.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitstop.agent.clock import BootSpan
from pitstop.errors import AgentError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY,
    boot TEXT NOT NULL,
    mono_us INTEGER NOT NULL,
    wall_us INTEGER NOT NULL,
    ts_us INTEGER,              -- the source's own timestamp, when it gave one
    vals TEXT NOT NULL,         -- JSON object: sensor -> number
    level INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS boots (
    boot TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    offset_us INTEGER,          -- true time = mono_us + offset_us, once the server told us
    source TEXT,                -- 'local' (the wall clock agreed) or 'server' (corrected)
    mono_lo INTEGER, mono_hi INTEGER, wall_lo INTEGER, wall_hi INTEGER  -- its readings' clocks
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    ts_us INTEGER,
    vals TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    at_us INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Row:
    """One buffered reading."""

    seq: int
    boot: str
    mono_us: int
    wall_us: int
    ts_us: int | None
    values: dict[str, float]
    level: int = 0


@dataclass(frozen=True)
class Incoming:
    """A reading from a source, as the agent read it."""

    values: dict[str, float]
    boot: str
    mono_us: int
    wall_us: int
    ts_us: int | None = None


class Buffer:
    """The durable queue of readings waiting for the server, plus the agent's small state (``meta``).

    Thread-safe: the source thread appends while the sender thread reads and removes.
    """

    def __init__(self, path: Path, max_readings: int = 1_000_000, max_level: int = 6) -> None:
        if max_readings < 2:
            raise AgentError(f"agent_buffer_max_readings must be at least 2, got {max_readings}")
        self.path = path
        self.max_readings = max_readings
        self.max_level = max_level
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AgentError(f"cannot open the agent buffer {path}: {exc}", code="agent_buffer") from exc
        self._count = int(self._db.execute("SELECT count(*) FROM readings").fetchone()[0])
        self._floor = -1  # readings at or below this seq are in flight: never thinned
        self.closed = False

    # -- meta ------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def put(self, **values: Any) -> None:
        """Set meta keys durably, in one transaction."""
        with self._lock, self._tx():
            self._put(values)

    def _put(self, values: dict[str, Any]) -> None:
        self._db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def bump(self, key: str, by: int) -> None:
        with self._lock, self._tx():
            self._bump(key, by)

    def _bump(self, key: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
            (key, by, by),
        )

    # -- readings --------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._count

    def append(self, readings: Sequence[Incoming], **meta: Any) -> list[int]:
        """Store readings with fresh seqs, and ``meta`` (e.g. a source's position) in the same
        durable transaction; returns the seqs. Thins or drops the oldest first when full."""
        if not readings:
            if meta:
                self.put(**meta)
            return []
        with self._lock:
            room = self.max_readings - self._count
            if len(readings) > room:
                self._make_room(len(readings))
            with self._tx():
                first = int(self._meta_int("next_seq", 0))
                seqs = list(range(first, first + len(readings)))
                self._db.executemany(
                    "INSERT INTO readings(seq, boot, mono_us, wall_us, ts_us, vals) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (s, r.boot, r.mono_us, r.wall_us, r.ts_us, json.dumps(r.values, allow_nan=True))
                        for s, r in zip(seqs, readings, strict=True)
                    ],
                )
                for boot in dict.fromkeys(r.boot for r in readings):
                    mine = [(s, r) for s, r in zip(seqs, readings, strict=True) if r.boot == boot]
                    monos = [r.mono_us for _, r in mine]
                    walls = [r.wall_us for _, r in mine]
                    self._db.execute(
                        "INSERT INTO boots(boot, first_seq, mono_lo, mono_hi, wall_lo, wall_hi) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(boot) DO UPDATE SET "
                        "mono_lo = min(coalesce(mono_lo, excluded.mono_lo), excluded.mono_lo), "
                        "mono_hi = max(coalesce(mono_hi, excluded.mono_hi), excluded.mono_hi), "
                        "wall_lo = min(coalesce(wall_lo, excluded.wall_lo), excluded.wall_lo), "
                        "wall_hi = max(coalesce(wall_hi, excluded.wall_hi), excluded.wall_hi)",
                        (boot, mine[0][0], min(monos), max(monos), min(walls), max(walls)),
                    )
                self._put({"next_seq": first + len(readings), **meta})
            self._count += len(readings)
        return seqs

    def oldest(self, limit: int) -> list[Row]:
        """The oldest ``limit`` readings, in seq order; they are in flight until ``remove_through``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, boot, mono_us, wall_us, ts_us, vals, level FROM readings ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            if rows:
                self._floor = max(self._floor, rows[-1][0])
        return [Row(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]

    def remove_through(self, seq: int, **meta: Any) -> int:
        """Delete readings up to ``seq`` (the server has them) and set ``meta``, durably."""
        with self._lock, self._tx():
            gone = self._db.execute("DELETE FROM readings WHERE seq <= ?", (seq,)).rowcount
            self._put(meta)
            self._count -= gone
        return int(gone)

    def reject(self, rows: Iterable[Row], problems: dict[int, tuple[str, str]]) -> int:
        """Move readings the server refused (by seq: code, message) out of the queue into
        ``rejected``, where ``pitstop agent status`` counts them."""
        now = int(time.time() * 1e6)
        chosen = [r for r in rows if r.seq in problems]
        with self._lock, self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO rejected(seq, ts_us, vals, code, message, at_us) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.seq, r.ts_us, json.dumps(r.values), problems[r.seq][0], problems[r.seq][1][:500], now)
                    for r in chosen
                ],
            )
            gone = self._db.executemany(
                "DELETE FROM readings WHERE seq = ?", [(r.seq,) for r in chosen]
            ).rowcount
            self._bump("rejected", len(chosen))
            self._count -= gone
        return len(chosen)

    def renumber(self, after: int, start: int) -> int:
        """Give the readings above seq ``after`` (never sent) new seqs from ``start`` on, keeping
        their order: the server already holds seqs up to ``start - 1`` for this machine (a new buffer
        for a machine that sent before). Returns the shift."""
        with self._lock, self._tx():
            low = self._db.execute("SELECT min(seq) FROM readings WHERE seq > ?", (after,)).fetchone()[0]
            nxt = int(self._meta_int("next_seq", 0))
            shift = start - (low if low is not None else nxt)
            if shift <= 0:
                return 0
            # two steps, so that no intermediate seq collides with another row's
            self._db.execute("UPDATE readings SET seq = -seq - ? WHERE seq > ?", (shift, after))
            self._db.execute("UPDATE readings SET seq = -seq WHERE seq < 0")
            self._db.execute("UPDATE boots SET first_seq = first_seq + ? WHERE first_seq > ?", (shift, after))
            self._put({"next_seq": nxt + shift})
        log.warning(
            "the server already holds seqs up to %d for this machine: new readings renumbered", start - 1
        )
        return shift

    # -- clocks ----------------------------------------------------------------------------------
    def spans(self) -> list[BootSpan]:
        """Every boot with readings, oldest first, with its offset and its readings' clock ranges."""
        with self._lock:
            rows = self._db.execute(
                "SELECT boot, offset_us, mono_lo, mono_hi, wall_lo, wall_hi FROM boots "
                "WHERE mono_lo IS NOT NULL ORDER BY first_seq"
            ).fetchall()
        return [BootSpan(r[0], r[1], (r[2], r[3]), (r[4], r[5])) for r in rows]

    def offset(self, boot: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT offset_us FROM boots WHERE boot = ?", (boot,)).fetchone()
        return None if row is None else row[0]

    def set_offset(self, boot: str, offset_us: int, source: str) -> None:
        """Record a boot's clock offset (a boot with no reading yet gets a row too)."""
        with self._lock, self._tx():
            first = int(self._meta_int("next_seq", 0))
            self._db.execute(
                "INSERT INTO boots(boot, first_seq, offset_us, source) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(boot) DO UPDATE SET offset_us = excluded.offset_us, source = excluded.source",
                (boot, first, offset_us, source),
            )
            if source == "server":
                self._bump("clock_corrections", 1)

    # -- overflow --------------------------------------------------------------------------------
    def _make_room(self, needed: int) -> None:
        """Thin (or, past ``max_level``, drop) the oldest waiting readings until ``needed`` more fit."""
        while self.max_readings - self._count < needed:
            free = int(
                self._db.execute("SELECT count(*) FROM readings WHERE seq > ?", (self._floor,)).fetchone()[0]
            )
            if free == 0:  # all of it is in flight: over the bound until that batch leaves
                log.warning("agent buffer full and all of it in flight: holding %d more for now", needed)
                return
            rows = self._db.execute(
                "SELECT seq, level FROM readings WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._floor, max(2, free // 2)),
            ).fetchall()
            thin = [(seq, level) for seq, level in rows if level < self.max_level]
            if len(thin) < 2:  # the oldest half is as thin as it gets: drop the oldest
                drop = rows[: max(1, min(len(rows), needed - (self.max_readings - self._count)))]
                with self._tx():
                    self._db.executemany("DELETE FROM readings WHERE seq = ?", [(s,) for s, _ in drop])
                    self._bump("dropped", len(drop))
                self._count -= len(drop)
                log.warning(
                    "agent buffer full: dropped the %d oldest readings (already thinned %d times)",
                    len(drop),
                    self.max_level,
                )
                continue
            # every second reading of the oldest half that can still be thinned
            gone = [seq for i, (seq, _) in enumerate(thin) if i % 2 == 1]
            kept = [seq for i, (seq, _) in enumerate(thin) if i % 2 == 0]
            with self._tx():
                self._db.executemany("DELETE FROM readings WHERE seq = ?", [(s,) for s in gone])
                self._db.executemany(
                    "UPDATE readings SET level = level + 1 WHERE seq = ?", [(s,) for s in kept]
                )
                self._bump("thinned", len(gone))
            self._count -= len(gone)
            log.warning(
                "agent buffer full (%d readings): thinned %d of the oldest to half (%d removed)",
                self.max_readings,
                len(thin),
                len(gone),
            )

    def release(self) -> None:
        """Nothing is in flight any more (a send failed): every reading may be thinned again."""
        with self._lock:
            self._floor = -1

    # -- plumbing --------------------------------------------------------------------------------
    def _meta_int(self, key: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def counts(self) -> dict[str, int]:
        """What the buffer did so far: readings waiting, thinned, dropped and rejected."""
        with self._lock:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            rejected = int(self._db.execute("SELECT count(*) FROM rejected").fetchone()[0])
        return {
            "depth": self._count,
            "thinned": int(rows.get("thinned", 0) or 0),
            "dropped": int(rows.get("dropped", 0) or 0),
            "rejected": rejected,
            "next_seq": int(rows.get("next_seq", 0) or 0),
        }

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._db.close()
                self.closed = True


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on an error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def open_readonly(path: Path) -> sqlite3.Connection:
    """The buffer, read-only (``pitstop agent status`` beside a running agent); the caller turns
    ``sqlite3.Error`` into ``AgentError`` (see ``read_status``)."""
    if not path.exists():
        raise AgentError(
            f"no agent buffer at {path}: has the agent run here? (see agent_dir)", code="agent_buffer"
        )
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
