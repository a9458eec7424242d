"""Lines of text as readings: CSV (a header line names the columns) and NDJSON.

A column or key ``ts`` is the reading's own time (RFC 3339, or seconds since the epoch); every other
numeric field is a sensor value (``machine_id`` and ``seq`` are ignored: the agent owns both). NDJSON
lines are either ``{"values": {...}, "ts": ...}`` or flat ``{"sensor": value, ..., "ts": ...}``.
Empty, null and non-numeric values are missing values.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from typing import Any

from pitstop.agent.sources.base import SourceReading, clean_values

_IGNORED = frozenset(("machine_id", "seq", "ts"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOW_US = 946_684_800_000_000  # 2000-01-01
_HIGH_US = 4_102_444_800_000_000  # 2100-01-01


def parse_ts(raw: Any) -> int | None:
    """µs since the epoch from RFC 3339 text or epoch seconds; None when absent. A time outside
    2000-2100 is an error (epoch milliseconds given for seconds, say), not a guess."""
    if raw is None or raw == "":
        return None
    us = _us(raw)
    if not _LOW_US <= us < _HIGH_US:
        raise ValueError(
            f"timestamp {str(raw)[:40]!r} is not between 2000 and 2100 (seconds since the epoch?)"
        )
    return us


def _us(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("a timestamp cannot be true or false")
    text = raw if isinstance(raw, int | float) else str(raw).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or abs(seconds) > 1e11:
            raise ValueError(f"timestamp {str(raw)[:40]!r} is out of range")
        return round(seconds * 1e6)
    assert isinstance(text, str)
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
    for line in data.decode("utf-8", errors="replace").split("\n"):  # not splitlines: U+2028 is text
        try:
            reading = csv.line(line) if csv is not None else ndjson_line(line)
        except (ValueError, OverflowError, RecursionError) as exc:
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
            self.columns = [cells[0].lstrip("\ufeff"), *cells[1:]]  # a byte-order mark before the header
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
    cells = next(csv.reader([line.rstrip("\r\n")]), [])  # quoted fields may hold commas
    return [cell.strip() for cell in cells]
