"""Alerts people act on: the ``alerts`` table (one row per firing of a key, dedup and resolve),
``alert_silences``, and the outbox learns a ``channel`` (webhook, slack, teams, email) and a
``group_key`` (alerts of one group raised close together go out as one message).

Revision ID: 0009_alerts
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_alerts"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("group_key", sa.String(128), nullable=False),
        sa.Column("machine_type", sa.String(64), nullable=True),
        sa.Column("machine_id", sa.String(64), nullable=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer, nullable=False, server_default="1"),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("silenced_by", sa.Integer, nullable=True),
    )
    op.create_index("ix_alerts_status_kind", "alerts", ["status", "kind"])
    # one firing alert per key: a re-fire bumps it, never doubles it
    op.create_index(
        "ux_alerts_firing_key",
        "alerts",
        ["key"],
        unique=True,
        sqlite_where=sa.text("status = 'firing'"),
        postgresql_where=sa.text("status = 'firing'"),
    )
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("machine_type", sa.String(64), nullable=True),
        sa.Column("key_prefix", sa.String(255), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("webhook_outbox") as batch:
        batch.add_column(sa.Column("channel", sa.String(16), nullable=False, server_default="webhook"))
        batch.add_column(sa.Column("group_key", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_outbox") as batch:
        batch.drop_column("group_key")
        batch.drop_column("channel")
    op.drop_table("alert_silences")
    op.drop_index("ux_alerts_firing_key", "alerts")
    op.drop_index("ix_alerts_status_kind", "alerts")
    op.drop_table("alerts")
