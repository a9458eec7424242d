"""Intake state shared by several API servers: the highest seq per machine and device rate buckets.

Revision ID: 0011_intake_shared
Revises: 0010_conversations
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_intake_shared"
down_revision = "0010_conversations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intake_seq",
        sa.Column("machine_id", sa.String(200), primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "intake_rate",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("intake_rate")
    op.drop_table("intake_seq")
