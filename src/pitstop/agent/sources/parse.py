"""Lines of text as readings: CSV (a header line names the columns) and NDJSON.

A column or key ``ts`` is the reading's own time (RFC 3339, or seconds since the epoch); every other
numeric field is a sensor value (``machine_id`` and ``seq`` are ignored: the agent owns both). NDJSON
lines are either ``{"values": {...}, "ts": ...}`` or flat ``{"sensor": value, ..., "ts": ...}``.
Empty, null and non-numeric values are missing values.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pitstop.agent.sources.base import SourceReading, clean_values

_IGNORED = frozenset(("machine_id", "seq", "ts"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_ts(raw: Any) -> int | None:
    """µs since the epoch from RFC 3339 text or epoch seconds; None when absent."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return round(float(raw) * 1e6)
    text = str(raw).strip()
    try:
        return round(float(text) * 1e6)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if when.tzinfo is None:
        raise ValueError(f"timestamp {text[:40]!r} has no time zone")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def ndjson_line(line: str) -> SourceReading | None:
    """One NDJSON line as a reading (None for a blank line); raises ValueError on a bad one."""
    line = line.strip()
    if not line:
        return None
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("an NDJSON line must be an object")
    ts = parse_ts(obj.get("ts"))
    if "values" in obj:
        values = clean_values(obj["values"])
    else:
        values = clean_values({k: v for k, v in obj.items() if k not in _IGNORED})
    return SourceReading(values, ts)


def parse_lines(data: bytes, csv: CsvLines | None, label: str) -> tuple[list[SourceReading], list[str]]:
    """Whole lines of bytes as readings (CSV through ``csv``, else NDJSON), and one message per
    line that is not a reading (the rest go on)."""
    readings: list[SourceReading] = []
    errors: list[str] = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            reading = csv.line(line) if csv is not None else ndjson_line(line)
        except ValueError as exc:
            errors.append(f"{label}: {exc}: {line[:120]!r}")
            continue
        if reading is not None:
            readings.append(reading)
    return readings, errors


class CsvLines:
    """CSV lines after a header; the header is remembered so that a resumed tail keeps it."""

    def __init__(self, header: str | None = None) -> None:
        self.columns: list[str] | None = _split(header) if header else None

    def line(self, line: str) -> SourceReading | None:
        line = line.strip()
        if not line:
            return None
        cells = _split(line)
        if self.columns is None:
            self.columns = cells
            return None
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} fields where the header has {len(self.columns)}")
        ts = None
        values: dict[str, Any] = {}
        for name, cell in zip(self.columns, cells, strict=True):
            if name == "ts":
                ts = parse_ts(cell)
            elif name not in _IGNORED and cell != "":
                try:
                    values[name] = float(cell)
                except ValueError:
                    continue  # text in a value column: missing
        return SourceReading(clean_values(values), ts)


def _split(line: str) -> list[str]:
    return [cell.strip().strip('"') for cell in line.rstrip("\r\n").split(",")]
