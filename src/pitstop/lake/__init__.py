"""Versioned lake tables (Delta Lake): telemetry, events; idempotent commits and time travel.

The room's parts load on first use (``pitstop.lake.Lake``), not when the package is imported: a
command that only names the tables starts without Polars, Delta or Arrow (an agent install)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pitstop.lake.names import TABLES

if TYPE_CHECKING:
    from pitstop.lake.location import LakeLocation
    from pitstop.lake.quarantine import list_quarantine, release
    from pitstop.lake.tables import Lake, quarantine_schema, telemetry_schema

__all__ = [
    "TABLES",
    "Lake",
    "LakeLocation",
    "list_quarantine",
    "quarantine_schema",
    "release",
    "telemetry_schema",
]

_MODULE = {
    "Lake": "tables",
    "quarantine_schema": "tables",
    "telemetry_schema": "tables",
    "LakeLocation": "location",
    "list_quarantine": "quarantine",
    "release": "quarantine",
}


def __getattr__(name: str) -> Any:
    module = _MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
