"""The bus message format for a batch of readings (versioned, compact JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pitstop.schema.readings import Reading

WIRE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class WireReading:
    machine_id: str
    ts_us: int
    seq: int
    values: dict[str, float]


def encode_batch(readings: list[Reading]) -> bytes:
    rows = [[r.machine_id, (r.ts - _EPOCH) // _US, r.seq, r.values] for r in readings]
    return orjson.dumps({"v": WIRE_VERSION, "readings": rows})


def decode_batch(payload: bytes) -> list[WireReading]:
    data: dict[str, Any] = orjson.loads(payload)
    if data.get("v") != WIRE_VERSION:
        raise ValueError(f"unsupported bus message version {data.get('v')!r}")
    return [WireReading(m, int(ts), int(seq), values) for m, ts, seq, values in data["readings"]]
