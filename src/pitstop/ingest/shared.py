"""Intake state shared by every API server of a deployment, in the ops DB (PostgreSQL).

With one server the highest seq per machine and the device rate buckets live in its memory. With
several behind a load balancer, a re-send through another server must still be a duplicate and a
device's rate is its rate across all of them: both live in PostgreSQL rows then.

- **seq**: a batch is checked and published while its machine's ``intake_seq`` row is locked
  (``SELECT … FOR UPDATE``), and the row moves to the batch's highest seq in the same transaction.
  Two servers taking one machine's batches at once take turns; a server that dies after the publish
  and before its commit leaves the row as it was, so the re-send is published again, and the
  processor, which drops seqs it has seen, still stores it once.
- **rate**: one statement refills and takes from the device's bucket by the database's clock
  (servers' clocks may differ).

Measured in ``bench/scale.py`` (shared vs in-memory intake).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

_SEED = text(
    "INSERT INTO intake_seq (machine_id, last_seq) "
    "SELECT CAST(:m AS VARCHAR), COALESCE((SELECT last_seq FROM machine_state WHERE machine_id = "
    "CAST(:m AS VARCHAR)), -1) "
    "ON CONFLICT (machine_id) DO NOTHING"
)
_LOCK = text("SELECT last_seq FROM intake_seq WHERE machine_id = :m FOR UPDATE")
_MOVE = text(
    "UPDATE intake_seq SET last_seq = CAST(:s AS BIGINT) "
    "WHERE machine_id = :m AND last_seq < CAST(:s AS BIGINT)"
)

_BUCKET = text(
    "INSERT INTO intake_rate (key, tokens, at) "
    "VALUES (:k, CAST(:burst AS DOUBLE PRECISION), extract(epoch from clock_timestamp())) "
    "ON CONFLICT (key) DO NOTHING"
)
_TAKE = text(
    """
    WITH cur AS (
        SELECT key,
               LEAST(CAST(:burst AS DOUBLE PRECISION), tokens + GREATEST(0, extract(epoch from
                   clock_timestamp()) - at) * CAST(:rate AS DOUBLE PRECISION)) AS refilled,
               extract(epoch from clock_timestamp()) AS now
        FROM intake_rate WHERE key = :k FOR UPDATE
    )
    UPDATE intake_rate r
    SET tokens = CASE WHEN cur.refilled >= 1 THEN cur.refilled - 1 ELSE cur.refilled END, at = cur.now
    FROM cur WHERE r.key = cur.key
    RETURNING cur.refilled
    """
)


class SeqHold:
    """A machine's locked seq row: ``last`` to check against, ``advance`` after the publish."""

    def __init__(self, conn: Connection, machine_id: str, last: int) -> None:
        self._conn, self.machine_id, self.last = conn, machine_id, last

    def advance(self, seq: int) -> None:
        self._conn.execute(_MOVE, {"m": self.machine_id, "s": seq})


class SharedIntakeState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def hold(self, machine_id: str) -> Iterator[SeqHold]:
        """The machine's highest accepted seq, locked until the block ends (and committed then)."""
        with self.engine.begin() as conn:
            # a server stuck on a machine's row (a publish hanging) must not stall the others
            # for long: they answer 503 after this and the device sends again
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
            conn.execute(_SEED, {"m": machine_id})
            last = conn.execute(_LOCK, {"m": machine_id}).scalar_one()
            yield SeqHold(conn, machine_id, int(last))

    def take(self, key: str, rate: float, burst: int) -> float:
        """A token from ``key``'s bucket: 0 if granted, else the seconds until one is available."""
        params = {"k": key, "rate": rate, "burst": float(burst)}
        with self.engine.begin() as conn:
            conn.execute(_BUCKET, params)
            refilled = float(conn.execute(_TAKE, params).scalar_one())
        return 0.0 if refilled >= 1 else (1 - refilled) / rate
