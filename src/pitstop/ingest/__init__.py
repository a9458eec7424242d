"""Intake of readings: device authentication, strict validation, durable hand-off to the bus.

Names are imported on first use, so that a validation worker (``pitstop.ingest.workers``) starts
without importing the server, the registry and the lake.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitstop.ingest.devices import DeviceIdentity, DeviceRegistry, hash_token, new_token
    from pitstop.ingest.intake import Intake, IntakeResult
    from pitstop.ingest.routes import router

_WHERE = {
    "DeviceIdentity": "devices",
    "DeviceRegistry": "devices",
    "hash_token": "devices",
    "new_token": "devices",
    "Intake": "intake",
    "IntakeResult": "intake",
    "router": "routes",
}

__all__ = ["DeviceIdentity", "DeviceRegistry", "Intake", "IntakeResult", "hash_token", "new_token", "router"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pitstop.ingest' has no attribute {name!r}")
    value = getattr(import_module(f"pitstop.ingest.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
