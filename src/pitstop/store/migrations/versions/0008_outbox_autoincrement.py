"""Lake-outbox ids are never reused (AUTOINCREMENT): the lake records the highest id it holds, so
an id handed out again after rows were deleted (or after a restore of an older ops DB) would be
taken for a row already in the lake. On PostgreSQL the id's sequence never reuses ids already:
nothing to do there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "lake_outbox", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.alter_column("id", autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("lake_outbox", recreate="always") as batch:
        batch.alter_column("id", autoincrement=True)
