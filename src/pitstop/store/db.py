from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from pitstop.store.models import AuditEntry


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
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, connect_args=connect_args)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        cfg = alembic_config(self.url)
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

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


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("pitstop.store") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg
