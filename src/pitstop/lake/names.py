"""The lake's table names, apart from the tables themselves: the CLI offers them as choices without
loading Polars, Delta or Arrow."""

from __future__ import annotations

TABLES = ("telemetry", "events", "quarantine", "predictions")
