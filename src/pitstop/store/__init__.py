"""Ops DB: machines, devices, predictions index, work orders, audit. SQLAlchemy + Alembic."""

from pitstop.store.db import Database, utcnow
from pitstop.store.models import (
    ApiKey,
    AuditEntry,
    Base,
    Device,
    FleetVersion,
    LoginToken,
    Machine,
    MachineState,
    Prediction,
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
    "LoginToken",
    "Machine",
    "MachineState",
    "Prediction",
    "User",
    "WebSession",
    "WebhookDelivery",
    "WorkOrder",
    "utcnow",
]
