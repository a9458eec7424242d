"""Ops DB: machines, devices, predictions index, work orders, audit. SQLAlchemy + Alembic."""

from pitstop.store.db import Database, audit_entry, utcnow
from pitstop.store.models import (
    ApiKey,
    AuditEntry,
    Base,
    Device,
    FleetVersion,
    LakeOutbox,
    LoginToken,
    Machine,
    MachineState,
    Prediction,
    ProcessorPosition,
    User,
    WebhookDelivery,
    WebSession,
    WorkOrder,
)

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Base",
    "Database",
    "Device",
    "FleetVersion",
    "LakeOutbox",
    "LoginToken",
    "Machine",
    "MachineState",
    "Prediction",
    "ProcessorPosition",
    "User",
    "WebSession",
    "WebhookDelivery",
    "WorkOrder",
    "audit_entry",
    "utcnow",
]
