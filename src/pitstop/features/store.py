"""The online feature store: each machine's current feature row, as its type's champion sees it.

The processor publishes here after each micro-batch the rows it computed for scoring (and, after a
rebuild, every machine of the lane); the API reads them (``GET /api/v1/features``). Per machine
type one contiguous matrix holds the rows, with an index from machine id to row, the seq and time
of the last reading folded in, and the model version and feature-spec hash they were computed for.
A lookup is a dict lookup per machine and one gather per type: no Polars, no database. Each row
is serialized to JSON once, on its first lookup after it changed, so a request mostly joins ready
bytes instead of formatting thousands of floats.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from pitstop.features.online import OnlineFeatures


@dataclass
class _Table:
    names: list[str]
    model_version: str
    spec_hash: str
    index: dict[str, int] = field(default_factory=dict)
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    seq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ts: list[str] = field(default_factory=list)  # ISO 8601, made once when a row is published
    # each row as JSON, made on its first lookup after it was published (a bulk publication, as a
    # restart's, formats nothing), then reused by every lookup until the row changes
    json: list[bytes | None] = field(default_factory=list)

    def put(self, ids: Sequence[str], matrix: np.ndarray, seqs: np.ndarray, ts_us: np.ndarray) -> None:
        index = self.index
        self._grow(len(index) + sum(1 for m in dict.fromkeys(ids) if m not in index))
        rows = np.fromiter((index.setdefault(m, len(index)) for m in ids), np.int64, len(ids))
        self.values[rows] = matrix
        self.seq[rows] = seqs
        ts, js = self.ts, self.json
        ts.extend([""] * (len(index) - len(ts)))
        js.extend([None] * (len(index) - len(js)))
        for row, us in zip(rows.tolist(), np.asarray(ts_us, np.int64).tolist(), strict=True):
            ts[row] = _iso(us)
            js[row] = None

    def row_json(self, row: int) -> bytes:
        found = self.json[row]
        if found is None:
            found = self.json[row] = orjson.dumps(self.values[row], option=orjson.OPT_SERIALIZE_NUMPY)
        return found

    def _grow(self, needed: int) -> None:
        have = len(self.seq)
        if needed <= have:
            return
        capacity = max(needed, 2 * have, 64)
        values = np.full((capacity, len(self.names)), np.nan)
        if have:
            values[:have] = self.values
        seq = np.full(capacity, -1, np.int64)
        seq[:have] = self.seq
        self.values, self.seq = values, seq


@dataclass(frozen=True)
class FeatureRows:
    """One machine type's share of a lookup: its rows in the order asked."""

    machine_type: str
    names: list[str]
    model_version: str
    spec_hash: str
    machine_ids: list[str]
    seq: np.ndarray
    ts: list[str]
    values: np.ndarray | None  # (machines, names); None when the lookup asked only for the JSON
    values_json: bytes  # ``values`` as a JSON array of rows, joined from each row's JSON


class OnlineStore:
    """Thread-safe: the processor publishes while API requests read."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(t.index) for t in self._tables.values())

    def publish(
        self,
        machine_type: str,
        online: OnlineFeatures,
        ids: Sequence[str],
        matrix: np.ndarray,
        model_version: str,
        *,
        replace: bool = False,
    ) -> None:
        """Rows ``matrix`` (``online.get(ids)``) of machines ``ids``, their seq and time from
        ``online``. A new model version or spec, or ``replace``, starts the type's table afresh."""
        slots = np.fromiter((online.slots[m] for m in ids), np.int64, len(ids))
        seqs, ts_us = online.last_seq[slots], online.last_ts[slots]
        spec = online.spec
        with self._lock:
            table = self._tables.get(machine_type)
            if (
                replace
                or table is None
                or (table.spec_hash, table.model_version) != (spec.hash, model_version)
            ):
                table = self._tables[machine_type] = _Table(list(spec.names), model_version, spec.hash)
            if len(ids):
                table.put(ids, matrix, seqs, ts_us)

    def drop(self, machine_type: str) -> None:
        with self._lock:
            self._tables.pop(machine_type, None)

    def lookup(
        self, machine_ids: Sequence[str], *, matrix: bool = True
    ) -> tuple[list[FeatureRows], list[str]]:
        """The rows of ``machine_ids`` grouped by type (in the order asked within each), and the
        machines no table holds; without ``matrix`` only their JSON (the API's case: no gather of
        values it would not send). One ``dict.get`` pass per type over the machines still unplaced
        (one pass in a fleet of one type), no Python loop per machine and type."""
        out: list[FeatureRows] = []
        left = list(machine_ids)
        with self._lock:
            for machine_type, table in self._tables.items():
                if not left:
                    break
                got = list(map(table.index.get, left))
                if None in got:
                    ids = [m for m, r in zip(left, got, strict=True) if r is not None]
                    left = [m for m, r in zip(left, got, strict=True) if r is None]
                    rows: list[int] = [r for r in got if r is not None]
                else:
                    ids, left, rows = left, [], got  # type: ignore[assignment]
                if not rows:
                    continue
                ts, js = table.ts, table.json
                parts = [js[r] or table.row_json(r) for r in rows]
                out.append(
                    FeatureRows(
                        machine_type,
                        table.names,
                        table.model_version,
                        table.spec_hash,
                        ids,
                        table.seq[rows],
                        [ts[r] for r in rows],
                        table.values[rows] if matrix else None,  # a copy: publishes do not change it
                        b"[" + b",".join(parts) + b"]",
                    )
                )
        return out, left


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).isoformat()
