"""The bus message format: one batch of one machine's readings as an Arrow IPC stream.

Columns: ``machine_id``, ``ts`` (µs, UTC), ``seq``, ``quarantine`` (the reason a reading is out of
range, else null), ``received`` (when intake received it, µs UTC: the clock-skew check's reference;
null from tools and from messages written before it existed; never stored in the lake), then one
float64 column per fleet sensor (null where a machine type lacks it).
Columnar on the wire, so the processor appends to the lake without touching readings one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from pitstop.schema.readings import Reading

TS = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def batch_schema(sensors: Sequence[str]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("machine_id", pa.string(), nullable=False),
            pa.field("ts", TS, nullable=False),
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("quarantine", pa.string()),
            pa.field("received", TS),
            *[pa.field(s, pa.float64()) for s in sensors],
        ]
    )


def batch_table(
    machine_id: str,
    ts_us: Sequence[int] | np.ndarray,
    seqs: Sequence[int],
    columns: dict[str, np.ndarray],
    reasons: Sequence[str | None],
    received_us: int | None = None,
) -> pa.Table:
    n = len(seqs)
    arrays = [
        pa.array([machine_id] * n, pa.string()),
        pa.array(ts_us, pa.int64()).cast(TS),
        pa.array(seqs, pa.int64()),
        pa.array(reasons, pa.string()),
        pa.array([received_us] * n, pa.int64()).cast(TS),
        *[pa.array(col, pa.float64(), from_pandas=True) for col in columns.values()],
    ]
    return pa.Table.from_arrays(arrays, schema=batch_schema(list(columns)))


def encode_table(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_table(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def encode_readings(readings: Sequence[Reading], sensors: Sequence[str]) -> bytes:
    """Readings (of one or more machines) as a bus message; for tools and tests."""
    columns = {s: np.array([r.values.get(s, np.nan) for r in readings], dtype=np.float64) for s in sensors}
    ts = [(r.ts - _EPOCH) // _US for r in readings]
    arrays = [
        pa.array([r.machine_id for r in readings], pa.string()),
        pa.array(ts, pa.int64()).cast(TS),
        pa.array([r.seq for r in readings], pa.int64()),
        pa.nulls(len(readings), pa.string()),
        pa.nulls(len(readings), TS),
        *[pa.array(col, pa.float64(), from_pandas=True) for col in columns.values()],
    ]
    return encode_table(pa.Table.from_arrays(arrays, schema=batch_schema(list(sensors))))
