"""Work orders: due date, explanation, component and procedure, lifecycle and finding; the risk
policy's per-machine memory; the webhook outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=True))
        batch.add_column(sa.Column("lead_time", sa.Float, nullable=True))
        batch.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("explanation", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("component", sa.String(128), nullable=True))
        batch.add_column(sa.Column("procedure", sa.Text, nullable=True))
        batch.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("finding", sa.String(32), nullable=True))
        batch.add_column(sa.Column("note", sa.Text, nullable=True))
        batch.add_column(sa.Column("technician", sa.String(128), nullable=True))
    with op.batch_alter_table("machine_state") as batch:
        batch.add_column(sa.Column("policy_armed", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("policy_rearm_seq", sa.Integer, nullable=True))
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_outbox_due", "webhook_outbox")
    op.drop_table("webhook_outbox")
    with op.batch_alter_table("machine_state") as batch:
        batch.drop_column("policy_rearm_seq")
        batch.drop_column("policy_armed")
    with op.batch_alter_table("work_orders") as batch:
        for name in (
            "technician",
            "note",
            "finding",
            "started_at",
            "acknowledged_at",
            "procedure",
            "component",
            "explanation",
            "due_at",
            "lead_time",
            "seq",
        ):
            batch.drop_column(name)
