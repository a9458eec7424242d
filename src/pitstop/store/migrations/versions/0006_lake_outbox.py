"""Lake rows written in the ops-DB transaction that causes them (work-order events); the
processor's bus position recorded with its ops-DB results.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lake_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_lake_outbox_pending", "lake_outbox", ["appended_at", "id"])
    op.create_table(
        "processor_positions",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("processor_positions")
    op.drop_index("ix_lake_outbox_pending", "lake_outbox")
    op.drop_table("lake_outbox")
