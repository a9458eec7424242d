"""Ops DB: machines, devices, predictions index, work orders, audit. SQLAlchemy + Alembic."""

from pitstop.store.db import Database, utcnow
from pitstop.store.models import (
    AuditEntry,
    Base,
    Device,
    FleetVersion,
    Machine,
    MachineState,
    Prediction,
    WebhookDelivery,
    WorkOrder,
)

__all__ = [
    "AuditEntry",
    "Base",
    "Database",
    "Device",
    "FleetVersion",
    "Machine",
    "MachineState",
    "Prediction",
    "WebhookDelivery",
    "WorkOrder",
    "utcnow",
]
