from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from sqlalchemy import select

from pitstop.features import OnlineFeatures
from pitstop.maintenance import apply_policy
from pitstop.platform import Platform
from pitstop.schema import decode_table
from pitstop.serving import Score
from pitstop.store import Machine, MachineState, Prediction, utcnow

log = logging.getLogger(__name__)

CONSUMER = "processor"


@dataclass(frozen=True)
class BatchReport:
    messages: int
    readings: int
    written: int
    quarantined: int
    duplicates: int
    scored: int
    work_orders: int


class Processor:
    """Consumes the bus in micro-batches. Per batch, in this order:

    1. drop re-sent readings: a (machine_id, seq) at or below the machine's last processed seq;
    2. append clean readings to ``telemetry`` and out-of-range ones to ``quarantine``. Each commit
       carries the batch's last bus position as its Delta transaction version, and only rows past a
       table's recorded position are written, so a batch replayed after a crash is never written twice;
    3. update each machine's online features and score the machines at their latest reading;
    4. write machine state, predictions and work orders to the ops DB;
    5. commit the bus position.

    Late readings (a seq below the machine's last) count as re-sends; the ingest endpoint rejects
    non-increasing seqs inside a batch, so they only arise from re-sent batches.
    """

    def __init__(self, platform: Platform) -> None:
        self.p = platform
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.online: OnlineFeatures | None = None
        self.errors = 0

    # -- lifecycle -------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Load the serving model and rebuild online state from the lake for active machines.

        Only rows up to the processor's committed bus position are replayed into the state: both
        lake tables were written before that commit. Rows past it belong to batches that will be
        read from the bus again (and skipped per table by its Delta transaction version).
        """
        model = self.p.scorer.reload()
        self.p.metrics.model_info.labels(model.name, model.version, self.p.scorer.alias).set(1)
        spec = model.bundle.spec
        self.online = OnlineFeatures(spec)
        with self.p.db.session() as s:
            active = list(s.scalars(select(Machine.machine_id).where(Machine.status == "active")))
        if not active:
            return
        upto = self.p.bus.position(CONSUMER)
        done = (pl.col("bus_position").is_null()) | (pl.col("bus_position") <= upto)
        clean = self.p.lake.read(
            "telemetry", columns=["machine_id", "seq", "bus_position", *spec.sensors], machine_ids=active
        ).filter(done)
        held = self.p.lake.read(
            "quarantine", columns=["machine_id", "seq", "bus_position"], machine_ids=active
        ).filter(done)
        for (machine_id,), group in clean.sort("machine_id", "seq").group_by(
            "machine_id", maintain_order=True
        ):
            self.online.update(
                str(machine_id), group["seq"].to_numpy(), group.select(spec.sensors).to_numpy()
            )
        for machine_id, seq in held.group_by("machine_id").agg(pl.col("seq").max()).iter_rows():
            self.online.skip_to(str(machine_id), int(seq))

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
        settings = self.p.settings
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                report = self.run_once()
            except Exception:  # keep the loop alive; the batch is retried from the bus
                self.errors += 1
                log.exception("processor batch failed; retrying")
                self._stop.wait(1.0)
                continue
            if report.messages == 0:
                self._stop.wait(settings.processor_poll_s)
            elif report.messages < settings.processor_max_messages:
                # not behind: let readings gather so the fixed cost of each commit is shared
                self._stop.wait(max(0.0, settings.processor_batch_interval_s - (time.monotonic() - started)))

    # -- one micro-batch ---------------------------------------------------------------------
    def run_once(self) -> BatchReport:
        online = self.online
        assert online is not None, "call bootstrap() first"
        started = time.perf_counter()
        messages = self.p.bus.read(CONSUMER, self.p.settings.processor_max_messages)
        if not messages:
            self.p.metrics.bus_lag.set(0)
            return BatchReport(0, 0, 0, 0, 0, 0, 0)
        position = messages[-1].position
        tables = []
        for m in messages:
            t = decode_table(m.payload)
            tables.append(t.append_column("bus_position", pa.array([m.position] * t.num_rows, pa.int64())))
        frame = pl.from_arrow(pa.concat_tables(tables))
        assert isinstance(frame, pl.DataFrame)
        total = frame.height
        fresh = self._fresh(frame)
        clean = fresh.filter(pl.col("quarantine").is_null())
        held = fresh.filter(pl.col("quarantine").is_not_null())
        lake_frame = fresh.with_columns(pl.col("ts").dt.date().alias("day"))
        written = 0
        for table, rows in (
            ("telemetry", lake_frame.filter(pl.col("quarantine").is_null()).drop("quarantine")),
            (
                "quarantine",
                lake_frame.filter(pl.col("quarantine").is_not_null()).rename({"quarantine": "reason"}),
            ),
        ):
            already = self.p.lake.committed_position(CONSUMER, table)
            rows = rows.filter(pl.col("bus_position") > already)
            if rows.height:
                self.p.lake.append(table, rows.to_arrow(), app_id=CONSUMER, position=position)
                written += rows.height if table == "telemetry" else 0

        spec = online.spec
        for (machine_id,), group in clean.group_by("machine_id", maintain_order=True):
            online.update(str(machine_id), group["seq"].to_numpy(), group.select(spec.sensors).to_numpy())
        for machine_id, seq in held.group_by("machine_id").agg(pl.col("seq").max()).iter_rows():
            online.skip_to(str(machine_id), int(seq))

        scored_ids = sorted(set(clean["machine_id"].to_list()))
        scores: dict[str, Score] = {}
        if scored_ids:
            scores = dict(zip(scored_ids, self.p.scorer.score_matrix(online.get(scored_ids)), strict=True))
        last = fresh.group_by("machine_id").agg(pl.col("seq").last(), pl.col("ts").last())
        opened = self._record(last, scores)
        self.p.bus.commit(CONSUMER, position)

        metrics = self.p.metrics
        metrics.lake_rows.inc(written)
        metrics.quarantined.inc(held.height)
        metrics.duplicates.inc(total - fresh.height)
        if scores:
            any_score = next(iter(scores.values()))
            metrics.predictions.labels(any_score.model_version, any_score.arm).inc(len(scores))
        metrics.work_orders_opened.inc(opened)
        metrics.bus_lag.set(self.lag())
        metrics.batch_seconds.observe(time.perf_counter() - started)
        return BatchReport(
            len(messages), total, written, held.height, total - fresh.height, len(scores), opened
        )

    def _fresh(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Rows above their machine's last processed seq, first of each (machine_id, seq), in order."""
        assert self.online is not None
        ids = frame["machine_id"].unique().to_list()
        last = pl.DataFrame(
            {"machine_id": ids, "_last": [self.online.last_seq(m) for m in ids]},
            schema={"machine_id": pl.String, "_last": pl.Int64},
        )
        return (
            frame.join(last, on="machine_id", how="left")
            .filter(pl.col("seq") > pl.col("_last"))
            .drop("_last")
            .unique(["machine_id", "seq"], keep="first", maintain_order=True)
            .sort("machine_id", "seq", maintain_order=True)
        )

    def _record(self, last: pl.DataFrame, scores: dict[str, Score]) -> int:
        """Machine state, predictions and work orders in one transaction, one flush."""
        online = self.online
        assert online is not None
        now = utcnow()
        predictions = []
        with self.p.db.session() as s:
            ids = last["machine_id"].to_list()
            states = {
                st.machine_id: st
                for st in s.scalars(select(MachineState).where(MachineState.machine_id.in_(ids)))
            }
            for machine_id, seq, ts in last.iter_rows():
                state = states.get(machine_id)
                if state is None:
                    state = MachineState(machine_id=machine_id, readings=0)
                    s.add(state)
                state.last_ts = ts
                state.last_seq = seq
                state.readings = online.count(machine_id)
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
                        ts=ts,
                        seq=seq,
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
