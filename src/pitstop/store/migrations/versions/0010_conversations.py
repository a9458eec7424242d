"""The maintenance assistant's conversations, kept per user, and their turns.

Revision ID: 0010_conversations
Revises: 0009_alerts
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_conversations"
down_revision = "0009_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_conversations_user_name", "conversations", ["user_name"])
    op.create_table(
        "conversation_turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "conversation_id",
            sa.String(32),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("speaker", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("sources", sa.Text, nullable=False, server_default="[]"),
        sa.Column("actions", sa.Text, nullable=False, server_default="[]"),
    )
    op.create_index("ix_conversation_turns_conversation_id", "conversation_turns", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_conversation_turns_conversation_id", "conversation_turns")
    op.drop_table("conversation_turns")
    op.drop_index("ix_conversations_user_name", "conversations")
    op.drop_table("conversations")
