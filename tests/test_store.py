from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from pitstop.platform import Platform
from pitstop.store import Base
from pitstop.store.db import Database, alembic_config
from tests.conftest import make_settings


def test_migrations_match_the_models(platform: Platform) -> None:
    with platform.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_is_idempotent(platform: Platform) -> None:
    platform.db.migrate()
    platform.db.migrate()


def test_every_migration_runs_from_empty_to_head_and_back_on_each_backend(
    ops_db: str, tmp_path: Path
) -> None:
    db = Database(make_settings(tmp_path / "data").ops_db_url)
    (tmp_path / "data").mkdir()
    try:
        assert db.engine.dialect.name == ops_db
        db.migrate()
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        # partial indexes (which compare_metadata does not look at) are partial on this backend too
        partial = _partial_indexes(ops_db)
        assert partial == _partial_indexes("sqlite") | _partial_indexes("postgresql")
        reflected = inspect(db.engine)
        assert partial == {
            index["name"]
            for table in reflected.get_table_names()
            for index in reflected.get_indexes(table)
            if index.get("dialect_options", {}).get(f"{ops_db}_where") is not None
        }
        command.downgrade(alembic_config(db.url), "base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.migrate()
        assert set(Base.metadata.tables) <= set(inspect(db.engine).get_table_names())
    finally:
        db.close()


def _partial_indexes(dialect: str) -> set[str | None]:
    """The models' indexes declared with a WHERE for ``dialect``."""
    return {
        index.name
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if index.dialect_kwargs.get(f"{dialect}_where") is not None
    }
