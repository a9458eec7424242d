"""Idempotency keys on lake-outbox rows: an admin event sent twice is stored once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lake_outbox") as batch:
        batch.add_column(sa.Column("idem_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_index("ux_lake_outbox_key", "lake_outbox", ["idem_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_lake_outbox_key", "lake_outbox")
    with op.batch_alter_table("lake_outbox") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idem_key")
