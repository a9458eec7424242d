from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from sqlalchemy import select

from pitstop.features import OnlineFeatures
from pitstop.maintenance import apply_policy
from pitstop.platform import Platform
from pitstop.schema import WireReading, decode_batch
from pitstop.serving import Score
from pitstop.store import Machine, MachineState, Prediction, utcnow

log = logging.getLogger(__name__)

CONSUMER = "processor"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class BatchReport:
    messages: int
    readings: int
    written: int
    duplicates: int
    scored: int
    work_orders: int


class Processor:
    """Consumes the bus in micro-batches. Per batch, in this order:

    1. append the new readings to the lake, committed with the batch's last bus position as the
       Delta transaction version, so a batch replayed after a crash is never written twice;
    2. update each machine's online features and score the machines at their latest reading;
    3. write machine state, predictions and work orders to the ops DB;
    4. commit the bus position.

    A reading whose (machine_id, seq) is at or below the machine's last processed seq is a
    duplicate (a re-sent batch) and is skipped; late readings fall under the same rule for now.
    """

    def __init__(self, platform: Platform) -> None:
        self.p = platform
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.online: OnlineFeatures | None = None
        self.errors = 0

    # -- lifecycle -------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Load the serving model and rebuild online state from the lake for active machines."""
        model = self.p.scorer.reload()
        self.p.metrics.model_info.labels(model.name, model.version, self.p.scorer.alias).set(1)
        spec = model.bundle.spec
        self.online = OnlineFeatures(spec)
        with self.p.db.session() as s:
            active = list(s.scalars(select(Machine.machine_id).where(Machine.status == "active")))
        if not active:
            return
        history = self.p.lake.read(
            "telemetry", columns=["machine_id", "seq", *spec.sensors], machine_ids=active
        )
        for (machine_id,), group in history.sort("machine_id", "seq").group_by(
            "machine_id", maintain_order=True
        ):
            self.online.update(
                str(machine_id), group["seq"].to_numpy(), group.select(spec.sensors).to_numpy()
            )

    def start(self) -> None:
        self.bootstrap()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pitstop-processor", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float = 60.0) -> None:
        """Stop the loop; with ``drain``, first process everything already on the bus."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if drain:
            deadline = time.monotonic() + timeout
            while self.lag() > 0 and time.monotonic() < deadline:
                self.run_once()

    def lag(self) -> int:
        return self.p.bus.head() - self.p.bus.position(CONSUMER)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.run_once()
            except Exception:  # keep the loop alive; the batch is retried from the bus
                self.errors += 1
                log.exception("processor batch failed; retrying")
                self._stop.wait(1.0)
                continue
            if report.messages == 0:
                self._stop.wait(self.p.settings.processor_poll_s)

    # -- one micro-batch ---------------------------------------------------------------------
    def run_once(self) -> BatchReport:
        assert self.online is not None, "call bootstrap() first"
        started = time.perf_counter()
        messages = self.p.bus.read(CONSUMER, self.p.settings.processor_max_messages)
        if not messages:
            self.p.metrics.bus_lag.set(0)
            return BatchReport(0, 0, 0, 0, 0, 0)
        position = messages[-1].position
        readings = [r for m in messages for r in decode_batch(m.payload)]
        groups = _by_machine(readings)
        kept = {m: rows for m, rows in ((m, self._fresh(m, rows)) for m, rows in groups.items()) if rows}
        written = sum(len(rows) for rows in kept.values())
        if kept:
            self.p.lake.append("telemetry", self._arrow(kept, position), app_id=CONSUMER, position=position)
        spec = self.online.spec
        for machine_id, rows in kept.items():
            values = np.array([[r.values.get(s, np.nan) for s in spec.sensors] for r in rows])
            self.online.update(machine_id, np.array([r.seq for r in rows]), values)
        scored_ids = sorted(kept)
        scores: dict[str, Score] = {}
        if scored_ids:
            matrix = self.online.get(scored_ids)
            scores = dict(zip(scored_ids, self.p.scorer.score_matrix(matrix), strict=True))
        opened = self._record(kept, scores)
        self.p.bus.commit(CONSUMER, position)

        m = self.p.metrics
        duplicates = len(readings) - written
        m.lake_rows.inc(written)
        m.duplicates.inc(duplicates)
        if scores:
            any_score = next(iter(scores.values()))
            m.predictions.labels(any_score.model_version, any_score.arm).inc(len(scores))
        m.work_orders_opened.inc(opened)
        m.bus_lag.set(self.lag())
        m.batch_seconds.observe(time.perf_counter() - started)
        return BatchReport(len(messages), len(readings), written, duplicates, len(scores), opened)

    def _fresh(self, machine_id: str, rows: list[WireReading]) -> list[WireReading]:
        assert self.online is not None
        mask = self.online.fresh(machine_id, np.array([r.seq for r in rows], dtype=np.int64))
        return [r for r, keep in zip(rows, mask, strict=True) if keep]

    def _arrow(self, kept: dict[str, list[WireReading]], position: int) -> pa.Table:
        rows = [r for machine_rows in kept.values() for r in machine_rows]
        ts = pa.array([r.ts_us for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        columns: dict[str, pa.Array] = {
            "machine_id": pa.array([r.machine_id for r in rows], pa.string()),
            "ts": ts,
            "seq": pa.array([r.seq for r in rows], pa.int64()),
            "day": ts.cast(pa.date32()),
            "bus_position": pa.array([position] * len(rows), pa.int64()),
        }
        for sensor in self.p.lake.sensors:
            columns[sensor] = pa.array([r.values.get(sensor) for r in rows], pa.float64())
        return pa.table(columns)

    def _record(self, kept: dict[str, list[WireReading]], scores: dict[str, Score]) -> int:
        """Machine state, predictions and work orders in one transaction, one flush."""
        assert self.online is not None
        now = utcnow()
        predictions = []
        with self.p.db.session() as s:
            states = {
                st.machine_id: st
                for st in s.scalars(select(MachineState).where(MachineState.machine_id.in_(list(kept))))
            }
            for machine_id, rows in kept.items():
                state = states.get(machine_id)
                if state is None:
                    state = MachineState(machine_id=machine_id, readings=0)
                    s.add(state)
                last = rows[-1]
                state.last_ts = _ts(last.ts_us)
                state.last_seq = last.seq
                state.readings = self.online.count(machine_id)
                score = scores.get(machine_id)
                if score is None:
                    continue
                state.predicted_rul = score.rul
                state.rul_lower = score.lower
                state.rul_upper = score.upper
                state.model_version = score.model_version
                state.scored_at = now
                predictions.append(
                    Prediction(
                        machine_id=machine_id,
                        ts=state.last_ts,
                        seq=last.seq,
                        rul=score.rul,
                        rul_lower=score.lower,
                        rul_upper=score.upper,
                        model_name=score.model_name,
                        model_version=score.model_version,
                        arm=score.arm,
                        created_at=now,
                    )
                )
            s.add_all(predictions)
            opened = apply_policy(s, self.p.policy, scores)
        return len(opened)


def _by_machine(readings: list[WireReading]) -> dict[str, list[WireReading]]:
    groups: dict[str, list[WireReading]] = {}
    for r in readings:
        groups.setdefault(r.machine_id, []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r.seq)
    return groups


def _ts(ts_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_us)
