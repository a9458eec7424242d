"""Versioned lake tables (Delta Lake): telemetry, events; idempotent commits and time travel."""

from pitstop.lake.location import LakeLocation
from pitstop.lake.quarantine import list_quarantine, release
from pitstop.lake.tables import TABLES, Lake, quarantine_schema, telemetry_schema

__all__ = [
    "TABLES",
    "Lake",
    "LakeLocation",
    "list_quarantine",
    "quarantine_schema",
    "release",
    "telemetry_schema",
]
