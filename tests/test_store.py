from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pitstop.platform import Platform
from pitstop.store import Base


def test_migrations_match_the_models(platform: Platform) -> None:
    with platform.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_is_idempotent(platform: Platform) -> None:
    platform.db.migrate()
    platform.db.migrate()
