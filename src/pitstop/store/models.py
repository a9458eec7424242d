from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Stored in UTC; always read back timezone-aware and in UTC (SQLite forgets the zone,
    PostgreSQL answers in its session's time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Machine(Base):
    __tablename__ = "machines"

    machine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    machine_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | retired
    installed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.machine_id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class MachineState(Base):
    """The processor's latest view of a machine: last reading and latest prediction."""

    __tablename__ = "machine_state"

    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.machine_id"), primary_key=True)
    last_ts: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    readings: Mapped[int] = mapped_column(Integer, default=0)
    predicted_rul: Mapped[float | None] = mapped_column(Float, nullable=True)
    rul_lower: Mapped[float | None] = mapped_column(Float, nullable=True)
    rul_upper: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    scored_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # the risk policy's memory of the machine's episode (see maintenance.PolicyState)
    policy_armed: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    policy_rearm_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_machine", "machine_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(UtcDateTime())
    seq: Mapped[int] = mapped_column(Integer)
    rul: Mapped[float] = mapped_column(Float)
    rul_lower: Mapped[float] = mapped_column(Float)
    rul_upper: Mapped[float] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(32))
    arm: Mapped[str] = mapped_column(String(16), default="champion")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # scored by a model loaded from the local cache while the registry was unreachable
    from_cache: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class WorkOrder(Base):
    __tablename__ = "work_orders"
    __table_args__ = (Index("ix_work_orders_machine_status", "machine_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.machine_id"))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    predicted_rul: Mapped[float] = mapped_column(Float)
    rul_lower: Mapped[float | None] = mapped_column(Float, nullable=True)
    rul_upper: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str] = mapped_column(String(32))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the reading that opened it
    lead_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    explanation: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON
    component: Mapped[str | None] = mapped_column(String(128), nullable=True)
    procedure: Mapped[str | None] = mapped_column(Text, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finding: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    technician: Mapped[str | None] = mapped_column(String(128), nullable=True)


class WebhookDelivery(Base):
    """One event for one webhook URL, kept until the receiver accepted it (the outbox)."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # how it is sent: webhook (signed JSON), slack, teams (incoming webhooks) or email (SMTP)
    channel: Mapped[str] = mapped_column(String(16), default="webhook", server_default="webhook")
    # alerts of one group raised close together are sent as one message: the group's open delivery
    group_key: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Alert(Base):
    """One firing of an alert key: re-fires bump ``count``/``last_at``; a resolve closes it."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_status_kind", "status", "kind"),
        Index(
            "ux_alerts_firing_key",
            "key",
            unique=True,
            sqlite_where=text("status = 'firing'"),
            postgresql_where=text("status = 'firing'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))  # info | warning | critical
    group_key: Mapped[str] = mapped_column(String(128))
    machine_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    machine_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    first_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_at: Mapped[datetime] = mapped_column(UtcDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    silenced_by: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the silence, when fired


class AlertSilence(Base):
    """Alerts matching every given field (kind, machine type, key prefix) are recorded, not notified."""

    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    machine_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_prefix: Mapped[str | None] = mapped_column(String(255), nullable=True)
    until: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the actor's role, for people


class FleetVersion(Base):
    """One applied fleet file (TOML text as given), newest version in force."""

    __tablename__ = "fleet_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(Text, default="", server_default="")  # the file it came from
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class User(Base):
    """A person (or an automation account) who logs in to the dashboard or calls the API."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id, with its parameters and salt
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKey(Base):
    """A user's API key, stored as the SHA-256 of the key (keys are 256 random bits)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class WebSession(Base):
    """A browser session, stored server-side; the cookie holds a random id, the table its hash."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LoginToken(Base):
    """A one-time login link (``/login?token=…``), stored hashed, used once, expiring."""

    __tablename__ = "login_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ProcessorPosition(Base):
    """The last bus position whose results a processor recorded in the ops DB, written in the
    same transaction as those results: a batch read again after a crash is not recorded twice."""

    __tablename__ = "processor_positions"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class LakeOutbox(Base):
    """Rows for the lake written in the ops-DB transaction that caused them (lake.outbox)."""

    __tablename__ = "lake_outbox"
    __table_args__ = (
        Index("ix_lake_outbox_pending", "appended_at", "id"),
        Index("ux_lake_outbox_key", "idem_key", unique=True),
        {"sqlite_autoincrement": True},  # ids never reused: the lake keeps the highest it holds
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)  # JSON: one row
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    appended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # a row that must be stored once however often it is sent (admin events): the caller's
    # idempotency key and a hash of the request it came with
    idem_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Conversation(Base):
    """A user's conversation with the maintenance assistant: what it is about (``context``, JSON:
    the machines and work orders in focus, the last list shown, an action awaiting confirmation)."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, hex
    user_name: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(Text)
    context: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConversationTurn(Base):
    """One message of a conversation: the user's, or the assistant's answer with its sources and
    the actions it proposed or took (JSON lists)."""

    __tablename__ = "conversation_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    ts: Mapped[datetime] = mapped_column(UtcDateTime())
    speaker: Mapped[str] = mapped_column(String(16))  # user | assistant
    text: Mapped[str] = mapped_column(Text)
    sources: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    actions: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")


class IntakeSeq(Base):
    """The highest seq accepted per machine, shared by every API server (scale-out, PostgreSQL): a
    re-send through another server is acknowledged as a duplicate, not published again."""

    __tablename__ = "intake_seq"

    machine_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class IntakeRate(Base):
    """A device's token bucket, shared by every API server (scale-out, PostgreSQL)."""

    __tablename__ = "intake_rate"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)  # the database's clock, seconds since the epoch
