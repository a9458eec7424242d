"""Versioned lake tables (Delta Lake): telemetry, events; idempotent commits and time travel."""

from pitstop.lake.tables import Lake, telemetry_schema

__all__ = ["Lake", "telemetry_schema"]
