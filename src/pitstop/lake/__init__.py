"""Versioned lake tables (Delta Lake): telemetry, events; idempotent commits and time travel."""

from pitstop.lake.tables import TABLES, Lake, quarantine_schema, telemetry_schema

__all__ = ["TABLES", "Lake", "quarantine_schema", "telemetry_schema"]
