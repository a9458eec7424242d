"""Strict validation of a reading batch, columnar where it can be.

One pass in Python checks each reading's shape and types (cheap: dict and type checks only), then
numpy checks ranges per sensor for the whole batch. A batch with any invalid reading is rejected
whole with a code per bad reading; out-of-range values are not invalid: those readings are
accepted into quarantine with the reason.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pitstop.errors import ForbiddenError, ValidationError
from pitstop.schema import MachineType
from pitstop.schema.wire import TS, batch_table

_MACHINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_NON_FINITE = re.compile(rb"\bNaN\b|\bInfinity\b")
_MAX_SEQ = 2**63 - 1
_KEYS = frozenset(("machine_id", "ts", "seq", "values"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ValidatedBatch:
    table: pa.Table | None  # clean and quarantined readings (column ``quarantine``); None if all duplicates
    accepted: int
    quarantined: int
    duplicates: int
    last_seq: int


def may_hold_literals(body: bytes) -> bool:
    """Whether a body may contain true or false (then every value is type-checked one by one).

    Arrow would read a boolean among numbers as 1.0 or 0.0, so the fast path needs to know there
    are none. A memchr for a letter first ("r" and "f" are rare in readings), then a substring
    search; a match inside a string only costs the fast path. A null needs no search: it shows up
    as a null in the Arrow column, which sends the batch to the strict path.
    """
    return (b"r" in body and b"true" in body) or (b"f" in body and b"false" in body)


def decode_body(body: bytes, content_type: str) -> list[Any]:
    """JSON array, ``{"readings": [...]}``, or NDJSON (one reading per line)."""
    ndjson = "ndjson" in content_type or "jsonlines" in content_type
    try:
        if ndjson:
            lines = [line for line in body.split(b"\n") if line.strip()]
            payload: Any = orjson.loads(b"[" + b",".join(lines) + b"]")
        else:
            payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        _non_finite_or_raise(body, ndjson, exc)
        raise  # unreachable: the helper always raises
    if isinstance(payload, dict) and set(payload) == {"readings"} and isinstance(payload["readings"], list):
        payload = payload["readings"]
    if not isinstance(payload, list):
        raise ValidationError(
            'body must be a JSON array of readings, {"readings": [...]}, or NDJSON', code="invalid_batch"
        )
    if not payload:
        raise ValidationError("the batch is empty", code="invalid_batch")
    return payload


def _non_finite_or_raise(body: bytes, ndjson: bool, exc: Exception) -> None:
    """orjson refuses NaN and Infinity; find which readings carry them to say so per reading."""
    payload: Any
    if _NON_FINITE.search(body) is None:
        raise ValidationError(f"body is not valid JSON: {exc}", code="invalid_json")
    try:
        text = body.decode()
        if ndjson:
            payload = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            payload = json.loads(text)
            if isinstance(payload, dict):
                payload = payload.get("readings")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValidationError(f"body is not valid JSON: {exc}", code="invalid_json") from None
    problems = []
    for index, raw in enumerate(payload if isinstance(payload, list) else []):
        values = raw.get("values") if isinstance(raw, dict) else None
        if isinstance(values, dict):
            bad = sorted(k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v))
            if bad:
                problems.append(_problem(index, "non_finite", f"NaN or Infinity in {', '.join(bad)}"))
    if not problems:
        raise ValidationError(f"body is not valid JSON: {exc}", code="invalid_json")
    raise ValidationError(_summary(len(problems), len(payload)), code="invalid_readings", details=problems)


def validate_batch(
    payload: list[Any],
    machine_type: MachineType,
    sensors: list[str],
    *,
    machine_id: str,
    last_seq: int,
    max_readings: int,
    horizon: datetime,
    check_values: bool = True,
) -> ValidatedBatch:
    """Validate readings for one device's machine. ``last_seq`` is the highest seq already accepted
    for it: readings at or below it are re-sends, acknowledged but not stored again.

    ``check_values=False`` is the fast path for bodies without true/false/null literals
    (``may_hold_literals``): values are then numbers or strings, and a string shows up as a
    non-numeric column, which sends the batch back through the strict path for its error codes.
    """
    if not check_values:
        fast = _fast(payload, machine_type, sensors, machine_id, last_seq, max_readings, horizon)
        if fast is not None:
            return fast
    if len(payload) > max_readings:
        raise ValidationError(
            f"batch has {len(payload)} readings, the limit is {max_readings}: split it",
            code="batch_too_large",
        )
    known = set(machine_type.sensor_names)
    required = machine_type.required
    problems: list[dict[str, Any]] = []
    foreign: set[str] = set()
    ts_us: list[int] = []
    seqs: list[int] = []
    values: list[dict[str, Any]] = []
    previous = None
    for index, raw in enumerate(payload):
        if type(raw) is not dict or raw.keys() != _KEYS:
            problems.append(_problem(index, "invalid_reading", _shape(raw)))
            continue
        mid, ts, seq, vals = raw["machine_id"], raw["ts"], raw["seq"], raw["values"]
        if type(mid) is not str or not _MACHINE_ID.fullmatch(mid):
            problems.append(
                _problem(index, "invalid_machine_id", "machine_id must be 1-64 of [A-Za-z0-9_.:-]")
            )
            continue
        if mid != machine_id:
            foreign.add(mid)
            continue
        if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
            problems.append(_problem(index, "invalid_seq", "seq must be an integer from 0 to 2^63-1"))
            continue
        if previous is not None and seq <= previous:
            problems.append(
                _problem(index, "non_increasing_seq", f"seq {seq} does not increase on {previous}")
            )
            continue
        previous = seq
        code, detail, when = _timestamp(ts, horizon)
        if code:
            problems.append(_problem(index, code, detail))
            continue
        if type(vals) is not dict:
            problems.append(_problem(index, "invalid_reading", "values must be an object {sensor: number}"))
            continue
        bad_type = [k for k, v in vals.items() if type(v) is not float and type(v) is not int]
        if bad_type:  # bool is not int here: type() is exact
            problems.append(_problem(index, "invalid_value", f"not a number: {', '.join(sorted(bad_type))}"))
            continue
        unknown = vals.keys() - known
        if unknown:
            problems.append(
                _problem(index, "unknown_sensor", f"unknown sensors: {', '.join(sorted(unknown))}")
            )
            continue
        missing = required - vals.keys()
        if missing:
            problems.append(
                _problem(index, "missing_sensor", f"missing sensors: {', '.join(sorted(missing))}")
            )
            continue
        ts_us.append(when)
        seqs.append(seq)
        values.append(vals)
    if foreign:
        raise ForbiddenError(
            f"this device may only post readings for machine {machine_id!r}, "
            f"not {', '.join(sorted(foreign))}",
            code="wrong_machine",
        )
    if problems:
        raise ValidationError(
            _summary(len(problems), len(payload)), code="invalid_readings", details=problems
        )

    return _assemble(machine_id, machine_type, sensors, ts_us, seqs, values, last_seq, None)


def _assemble(
    machine_id: str,
    machine_type: MachineType,
    sensors: list[str],
    ts_us: Sequence[int] | np.ndarray,
    seqs: list[int],
    values: list[dict[str, Any]],
    last_seq: int,
    columns: dict[str, np.ndarray] | None,
) -> ValidatedBatch:
    fresh = [i for i, s in enumerate(seqs) if s > last_seq]
    duplicates = len(seqs) - len(fresh)
    if not fresh:
        return ValidatedBatch(None, 0, 0, duplicates, last_seq)
    if duplicates:
        ts_us = [ts_us[i] for i in fresh]
        seqs = [seqs[i] for i in fresh]
        values = [values[i] for i in fresh]
        columns = None if columns is None else {s: c[fresh] for s, c in columns.items()}
    if columns is None:
        columns = {s: np.array([v.get(s, np.nan) for v in values], dtype=np.float64) for s in sensors}
    reasons = _out_of_range(columns, machine_type, len(seqs))
    received = int(time.time() * 1e6)  # arrival (µs): the clock-skew check
    table = batch_table(machine_id, ts_us, seqs, columns, reasons, received)
    quarantined = sum(r is not None for r in reasons)
    return ValidatedBatch(table, len(seqs) - quarantined, quarantined, duplicates, seqs[-1])


def _fast(
    payload: list[Any],
    machine_type: MachineType,
    sensors: list[str],
    machine_id: str,
    last_seq: int,
    max_readings: int,
    horizon: datetime,
) -> ValidatedBatch | None:
    """The common case in few Python operations per reading; None means "use the strict path".

    Values and timestamps are converted and checked by Arrow for the whole batch. Anything the
    fast path does not fully vouch for (a null, a missing sensor, a timestamp outside the plain
    RFC 3339 form, a string among numbers) hands the batch to the strict path, which finds the code.
    """
    if len(payload) > max_readings:
        return None
    stamps: list[Any] = []
    seqs: list[int] = []
    values: list[dict[str, Any]] = []
    previous = -1
    keys: set[str] = set()
    for raw in payload:
        if type(raw) is not dict or raw.keys() != _KEYS or raw["machine_id"] != machine_id:
            return None
        seq, vals = raw["seq"], raw["values"]
        if type(seq) is not int or seq <= previous or seq > _MAX_SEQ or type(vals) is not dict:
            return None
        previous = seq
        keys.update(vals)
        stamps.append(raw["ts"])
        seqs.append(seq)
        values.append(vals)
    if not machine_type.required <= keys <= set(machine_type.sensor_names):
        return None
    try:
        ts_us = _timestamps(stamps, horizon)
        table = pa.Table.from_pylist(values)  # C++ conversion: one pass over the dicts
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None  # a timestamp Arrow cannot parse, or mixed types in a column
    if ts_us is None or table.num_columns != len(keys):
        return None  # Arrow takes the columns from the first reading: an optional sensor first missing
    columns = {}
    for s in sensors:
        if s not in keys:
            columns[s] = np.full(len(values), np.nan)
            continue
        col = table.column(s)
        if col.null_count or not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            return None  # a null or missing value, or strings, lists or objects among the numbers
        columns[s] = col.to_numpy().astype(np.float64, copy=False)
    return _assemble(machine_id, machine_type, sensors, ts_us, seqs, values, last_seq, columns)


# The plain RFC 3339 form with an explicit offset; others (a space separator, more than 6 digits
# of fraction, an offset with seconds) go through datetime.fromisoformat on the strict path.
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"


def _timestamps(stamps: list[Any], horizon: datetime) -> np.ndarray | None:
    """µs since the epoch for a batch of RFC 3339 strings, or None if any needs the strict path."""
    text = pa.array(stamps, pa.string())  # raises on a non-string
    if text.null_count or not pc.all(pc.match_substring_regex(text, _RFC3339)).as_py():
        return None
    us = text.cast(TS).cast(pa.int64()).to_numpy()  # raises on an impossible date or time
    if us.max() > (horizon - _EPOCH) // _US:
        return None
    return us


def _out_of_range(columns: dict[str, np.ndarray], machine_type: MachineType, n: int) -> list[str | None]:
    reasons: list[str | None] = [None] * n
    for sensor in machine_type.sensors:
        col = columns[sensor.name]
        bad = np.flatnonzero((col < sensor.low) | (col > sensor.high))
        for i in bad:
            note = (
                f"{sensor.name}={col[i]:g} outside [{sensor.low:g}, {sensor.high:g}] {sensor.unit}".rstrip()
            )
            reasons[i] = note if reasons[i] is None else f"{reasons[i]}; {note}"
    return reasons


def _timestamp(ts: Any, horizon: datetime) -> tuple[str | None, str, int]:
    if type(ts) is not str:
        return "invalid_timestamp", "ts must be an ISO 8601 string, e.g. 2026-01-01T00:00:00Z", 0
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        return "invalid_timestamp", f"ts {ts[:40]!r} is not ISO 8601", 0
    if when.tzinfo is None:
        return "naive_timestamp", "ts must carry a timezone, e.g. 2026-01-01T00:00:00Z", 0
    if when > horizon:
        return "future_timestamp", f"ts {ts[:40]} is too far in the future (check the device clock)", 0
    return None, "", (when - _EPOCH) // _US


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def _shape(raw: Any) -> str:
    if type(raw) is not dict:
        return "each reading must be an object {machine_id, ts, seq, values}"
    missing = sorted(_KEYS - raw.keys())
    extra = sorted(raw.keys() - _KEYS)
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"unexpected {', '.join(extra)}"] if extra else []
    )
    return "; ".join(parts)


def _problem(index: int, code: str, message: str) -> dict[str, Any]:
    return {"index": index, "code": code, "message": message}


def _summary(bad: int, total: int) -> str:
    return f"{bad} of {total} readings are invalid; nothing in this batch was stored"
