from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from pitstop.errors import StorageError, first_line
from pitstop.store.models import AuditEntry

# PostgreSQL: connections per process. An API server runs its sync routes on a thread pool and
# the processor's threads (stream loop, outbox drain, notifier, retrainer) share one engine; a
# burst beyond the pool waits for a connection (POOL_TIMEOUT) rather than failing.
POOL_SIZE = 10
POOL_OVERFLOW = 20
POOL_TIMEOUT = 30
POOL_RECYCLE = 1800  # seconds: a connection a proxy or firewall may have dropped is renewed
MIGRATION_LOCK = 0x7069747374  # PostgreSQL advisory lock key ("pitst"): one migration at a time


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL, like the bus: with NORMAL a power loss can roll back the last ops-DB commits (work
    # orders, their outbox events, the processor's recorded position) while the bus position
    # after them is durable, and those results would never be written again
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def audit_entry(actor: str, action: str, *, role: str | None = None, **detail: Any) -> AuditEntry:
    """An audit row, for a caller that adds it in its own transaction (with the change it records)."""
    return AuditEntry(
        ts=utcnow(), actor=actor, role=role, action=action, detail=json.dumps(detail, default=str)
    )


class Database:
    """The ops DB: an engine, a session factory and the migration entry point."""

    def __init__(self, url: str) -> None:
        self.url = driver_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(
                self.url,
                pool_pre_ping=True,  # a server restarted since: a fresh connection, not an error
                pool_size=POOL_SIZE,
                max_overflow=POOL_OVERFLOW,
                pool_timeout=POOL_TIMEOUT,
                pool_recycle=POOL_RECYCLE,
                connect_args={"connect_timeout": 10, "application_name": "pitstop"},
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def where(self) -> str:
        """Where the ops DB is, for messages (no password): a file, or PostgreSQL's host and DB."""
        url = make_url(self.url)
        if self.is_sqlite:
            return str(url.database)
        return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database}"

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision. A PostgreSQL that cannot be reached
        is one ``StorageError`` naming its host (``ops_db_unreachable``). Processes starting at
        once (API servers, processor workers) migrate one after the other: SQLite's write lock,
        or on PostgreSQL a lock held to the end of the migration's transaction."""
        cfg = alembic_config(self.url)
        with self.connect() as conn:
            try:
                with conn.begin():
                    if not self.is_sqlite:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            except DBAPIError as exc:
                if self.is_sqlite:
                    raise  # the caller names the data dir and what to check
                raise StorageError(
                    f"cannot migrate the ops DB, {self.where}: {first_line(exc.orig or exc)} (its user "
                    "must own the database, or may create tables in its schema)",
                    code="ops_db_unavailable",
                ) from exc

    def connect(self) -> Connection:
        """A connection; on PostgreSQL one that cannot be made (server down, wrong host, port,
        database or user) is a ``StorageError`` that names the server (``ops_db_unreachable``)."""
        try:
            return self.engine.connect()
        except DBAPIError as exc:
            if self.is_sqlite:
                raise
            raise StorageError(
                f"cannot connect to the ops DB, {self.where}: {first_line(exc.orig or exc)} (check that "
                "the server is running and that ops_db_url or PITSTOP_OPS_DB_URL names it)",
                code="ops_db_unreachable",
            ) from exc

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Run a block in one process at a time across every process on this ops DB (PostgreSQL:
        an advisory lock held by a connection of its own). SQLite: the caller's own lock serves,
        as before."""
        if self.is_sqlite:
            yield
            return
        with self.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": name})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": name})
                conn.commit()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def on_flush(self, handler: Callable[[Session], None]) -> None:
        """Call ``handler(session)`` before every flush of this DB's sessions, inside their
        transaction: what it adds commits or rolls back with the rows being flushed."""
        event.listen(self._sessions, "before_flush", lambda session, _ctx, _objs: handler(session))

    def audit(self, actor: str, action: str, *, role: str | None = None, **detail: Any) -> None:
        """Record ``action`` by ``actor``: a person's user name (with their ``role``) or a part of
        the system (``processor``, ``retrainer``, ``cli``)."""
        with self.session() as s:
            s.add(audit_entry(actor, action, role=role, **detail))

    def audit_many(self, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Record several ``(actor, action, detail)`` rows in one transaction: an alert storm
        (a hundred machines failing a check in one batch) costs one commit, not one each.
        Either every row is recorded or none is."""
        rows = [audit_entry(actor, action, **detail) for actor, action, detail in entries]
        if not rows:
            return
        with self.session() as s:
            s.add_all(rows)

    def audit_entries(
        self, limit: int = 50, action: str | None = None, actor: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest audit entries first (optionally one action's, one actor's)."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        if actor is not None:
            query = query.where(AuditEntry.actor == actor)
        with self.session() as s:
            return [
                {
                    "id": e.id,
                    "ts": e.ts.isoformat(),
                    "actor": e.actor,
                    "role": e.role,
                    "action": e.action,
                    "detail": json.loads(e.detail),
                }
                for e in s.scalars(query)
            ]

    def audited_move(self, move_id: str, limit: int = 1000) -> bool:
        """Whether a model move (promote, rollback) with this id is in the recent audit already."""
        for action in ("model_promoted", "model_rolled_back"):
            if any(e["detail"].get("move") == move_id for e in self.audit_entries(limit, action)):
                return True
        return False

    def close(self) -> None:
        self.engine.dispose()


def driver_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver Pitstop ships with."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("pitstop.store") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg
