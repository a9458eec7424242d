"""initial ops schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "machines",
        sa.Column("machine_id", sa.String(64), primary_key=True),
        sa.Column("machine_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("installed_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("machine_id", sa.String(64), sa.ForeignKey("machines.machine_id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled_at", TS, nullable=True),
    )
    op.create_index("ix_devices_machine_id", "devices", ["machine_id"])
    op.create_table(
        "machine_state",
        sa.Column("machine_id", sa.String(64), sa.ForeignKey("machines.machine_id"), primary_key=True),
        sa.Column("last_ts", TS, nullable=True),
        sa.Column("last_seq", sa.Integer, nullable=True),
        sa.Column("readings", sa.Integer, nullable=False),
        sa.Column("predicted_rul", sa.Float, nullable=True),
        sa.Column("rul_lower", sa.Float, nullable=True),
        sa.Column("rul_upper", sa.Float, nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("scored_at", TS, nullable=True),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("rul", sa.Float, nullable=False),
        sa.Column("rul_lower", sa.Float, nullable=False),
        sa.Column("rul_upper", sa.Float, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_predictions_machine", "predictions", ["machine_id", "id"])
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("machine_id", sa.String(64), sa.ForeignKey("machines.machine_id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("predicted_rul", sa.Float, nullable=False),
        sa.Column("rul_lower", sa.Float, nullable=True),
        sa.Column("rul_upper", sa.Float, nullable=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
    )
    op.create_index("ix_work_orders_machine_status", "work_orders", ["machine_id", "status"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "audit_log",
        "work_orders",
        "predictions",
        "machine_state",
        "devices",
        "machines",
    ):
        op.drop_table(table)
