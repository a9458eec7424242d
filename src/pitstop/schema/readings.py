from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from pitstop.errors import ValidationError
from pitstop.schema.fleet import MachineType

EVENT_KINDS = ("failure", "maintenance", "inspection")

MachineId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class Reading(BaseModel):
    """One reading from one machine: event time, per-machine sequence number, sensor values."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    machine_id: MachineId
    ts: datetime
    seq: Annotated[StrictInt, Field(ge=0)]
    values: dict[str, StrictFloat | StrictInt]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    readings: list[dict[str, Any]]


_READING = TypeAdapter(Reading)


def parse_readings(
    payload: Any, machine_type: MachineType, *, max_readings: int, max_future_skew_s: float
) -> list[Reading]:
    """Validate a decoded JSON batch (an array, or ``{"readings": [...]}``) strictly.

    Raises ``ValidationError`` listing each bad reading with its index and a machine-readable code.
    """
    if isinstance(payload, dict):
        try:
            payload = _Envelope.model_validate(payload).readings
        except PydanticValidationError:
            raise ValidationError(
                'body must be a JSON array of readings or {"readings": [...]}', code="invalid_batch"
            ) from None
    if not isinstance(payload, list) or not payload:
        raise ValidationError("body must be a non-empty JSON array of readings", code="invalid_batch")
    if len(payload) > max_readings:
        raise ValidationError(
            f"batch has {len(payload)} readings, the limit is {max_readings}: split it",
            code="batch_too_large",
        )
    horizon = datetime.now(UTC) + timedelta(seconds=max_future_skew_s)
    known = set(machine_type.sensor_names)
    required = machine_type.required
    readings: list[Reading] = []
    problems: list[dict[str, Any]] = []
    for index, raw in enumerate(payload):
        try:
            if isinstance(raw, dict) and isinstance(raw.get("ts"), str):
                raw = {**raw, "ts": datetime.fromisoformat(raw["ts"])}
            reading = _READING.validate_python(raw)
        except (PydanticValidationError, ValueError) as exc:
            problems.append({"index": index, "code": "invalid_reading", "message": _first(exc)})
            continue
        code, message = _check(reading, known, required, horizon)
        if code:
            problems.append({"index": index, "code": code, "message": message})
        else:
            readings.append(reading)
    if problems:
        raise ValidationError(
            f"{len(problems)} of {len(payload)} readings are invalid; nothing in this batch was stored",
            code="invalid_readings",
            details=problems,
        )
    return readings


def _check(
    reading: Reading, known: set[str], required: frozenset[str], horizon: datetime
) -> tuple[str | None, str]:
    if reading.ts.tzinfo is None:
        return "naive_timestamp", "ts must carry a timezone, e.g. 2026-01-01T00:00:00Z"
    if reading.ts > horizon:
        return "future_timestamp", f"ts {reading.ts.isoformat()} is too far in the future"
    unknown = sorted(set(reading.values) - known)
    if unknown:
        return "unknown_sensor", f"unknown sensors: {', '.join(unknown)}"
    missing = sorted(required - set(reading.values))
    if missing:
        return "missing_sensor", f"missing required sensors: {', '.join(missing)}"
    for name, value in reading.values.items():
        if not math.isfinite(value):
            return "non_finite", f"sensor {name} is not a finite number"
    return None, ""


def _first(exc: Exception) -> str:
    if isinstance(exc, PydanticValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where}: {err['msg']}" if where else str(err["msg"])
    return str(exc)
