from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from sqlalchemy import select

from pitstop.errors import ModelError
from pitstop.features import FeatureSpec, OnlineFeatures
from pitstop.maintenance import Explanation, PolicyState, Reading, RiskPolicy, open_work_orders
from pitstop.monitoring.monitor import DriftMonitor, DriftReport
from pitstop.monitoring.performance import record, score_failure
from pitstop.monitoring.retrain import Retrainer
from pitstop.platform import Platform
from pitstop.schema import decode_table
from pitstop.serving import Score, Scorer
from pitstop.serving.scorer import bucket, invalid_outputs
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

    Late readings (a seq at or below the highest its machine had before, in bus order) are
    dropped as re-sends; the ingest endpoint rejects non-increasing seqs inside a batch and
    acknowledges lower ones as re-sends, so they only arise from re-sent batches. Every
    ``feature_snapshot_s`` the online state is saved after a commit, for a fast restart.
    """

    def __init__(self, platform: Platform) -> None:
        self.p = platform
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.online: OnlineFeatures | None = None
        self.errors = 0
        self._last: dict[str, int] = {}  # highest seq processed per machine (clean or quarantined)
        self._resets: set[tuple[str, int]] = set()  # reset events given to the online state
        self._events_version: int | None = None
        self._snapshot_at = time.monotonic()
        self.restored_from: int | None = None  # the bus position of the snapshot bootstrap used
        self._serving_checked = time.monotonic()
        self._serving_problem: dict[str, str | None] = {}
        self._watcher: threading.Thread | None = None  # polls the registry for the aliases
        settings = platform.settings
        self.drift = DriftMonitor(
            settings.drift_window,
            settings.drift_alpha,
            settings.drift_psi_threshold,
            settings.drift_correction,
            on_report=self._drift_report,
        )
        self._types: dict[str, str] = {}  # machine id -> type (see _machine_types)
        self.retrainer = Retrainer(platform)
        self._retrained_at = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Load the serving model and bring online feature state up to the committed bus position.

        From the newest feature snapshot when there is one for the model's spec (then only lake rows
        from bus positions past it are replayed), else from the lake for active machines. Only rows
        up to the committed bus position are replayed: both lake tables were written before that
        commit, and rows past it belong to batches that will be read from the bus again (and skipped
        per table by its Delta transaction version).
        """
        model = self.p.scorer.reload()
        self.p.metrics.model_info.labels(model.name, model.version, self.p.scorer.alias).set(1)
        spec = model.bundle.spec
        self._load_challenger()
        upto = self.p.bus.position(CONSUMER)
        restored = self.restored_from = self._load_snapshot(spec, upto)
        if restored is None:
            self.online = OnlineFeatures(spec)
            self._last = {}
            self._resets = set()
            after = None
        else:
            after = restored
        self._sync_resets()
        with self.p.db.session() as s:
            active = list(s.scalars(select(Machine.machine_id).where(Machine.status == "active")))
        if not active:
            return
        done = (pl.col("bus_position").is_null()) | (pl.col("bus_position") <= upto)
        if after is not None:
            done = pl.col("bus_position").is_not_null() & (pl.col("bus_position") <= upto)
        cols = ["machine_id", "ts", "seq", "bus_position"]
        clean = self.p.lake.read(
            "telemetry", columns=[*cols, *spec.inputs], machine_ids=active, after_position=after
        ).filter(done)
        held = self.p.lake.read("quarantine", columns=cols, machine_ids=active, after_position=after).filter(
            done
        )
        clean = clean.sort("machine_id", "bus_position", "seq", nulls_last=False)
        self._feed(clean)
        for machine_id, seq in (
            pl.concat([clean.select("machine_id", "seq"), held.select("machine_id", "seq")])
            .group_by("machine_id")
            .agg(pl.col("seq").max())
            .iter_rows()
        ):
            self._last[machine_id] = max(self._last.get(machine_id, -1), int(seq))

    def _feed(self, clean: pl.DataFrame) -> None:
        """Clean rows, grouped by machine in arrival order, into the online features."""
        assert self.online is not None
        if clean.height:
            self.online.update(
                clean["machine_id"].to_numpy(),
                clean["seq"].to_numpy(),
                clean["ts"].dt.epoch("us").to_numpy(),
                clean.select(self.online.spec.inputs).to_numpy(),
            )

    def _sync_resets(self) -> None:
        """Register reset events (maintenance, failure) the online state has not seen yet."""
        assert self.online is not None
        version = self.p.lake.version("events")
        if version == self._events_version:
            return
        events = self.p.lake.read("events", columns=["machine_id", "ts", "seq", "kind"])
        kinds = list(self.online.spec.reset_events)
        episodes = set()
        failures: list[tuple[str, int, int]] = []  # machine, failure seq, seq of the reset before
        previous: dict[str, int] = {}
        for machine_id, ts, seq, kind in (
            events.filter(pl.col("kind").is_in(kinds))
            .select("machine_id", pl.col("ts").dt.epoch("us"), "seq", "kind")
            .sort("ts")
            .iter_rows()
        ):
            if (machine_id, ts) not in self._resets:
                self._resets.add((machine_id, ts))
                self.online.reset(machine_id, ts)
                episodes.add(machine_id)
                if kind == "failure" and seq is not None and self._events_version is not None:
                    failures.append((machine_id, int(seq), previous.get(machine_id, -1)))
            if seq is not None:
                previous[machine_id] = int(seq)
        for machine_id, seq, since in failures:  # live performance, now that the truth is known
            try:
                report = score_failure(self.p, machine_id, seq, since)
                if report["predictions"]:
                    record(self.p, report)
                    missed = not report["caught_in_time"]
                    if (
                        missed
                        and self.p.settings.retrain_on_performance
                        and self.retrainer.trigger("performance")
                    ):
                        log.warning("retraining: %s failed with no work order in time", machine_id)
            except Exception:
                log.exception("could not score the predictions before %s's failure", machine_id)
        if episodes:  # a new episode: the risk policy is armed again
            with self.p.db.session() as s:
                for state in s.scalars(
                    select(MachineState).where(MachineState.machine_id.in_(sorted(episodes)))
                ):
                    memory = PolicyState(state.policy_armed, False, state.policy_rearm_seq)
                    RiskPolicy.reset(memory)
                    state.policy_armed, state.policy_rearm_seq = memory.armed, memory.rearm_seq
        self._events_version = version

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> Path:
        """Save the online state at the committed bus position (atomically: a temp file renamed)."""
        assert self.online is not None
        position = self.p.bus.position(CONSUMER)
        extra = {
            "position": position,
            "last": self._last,
            "resets": sorted(self._resets),
            "events_version": self._events_version,
        }
        path = self.p.settings.data_dir / "state" / "features.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(self.online.snapshot(extra))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._snapshot_at = time.monotonic()
        return path

    def _load_snapshot(self, spec: FeatureSpec, upto: int) -> int | None:
        """Restore state from the snapshot if it matches the spec; returns its bus position."""
        path = self.p.settings.data_dir / "state" / "features.npz"
        if not path.exists():
            return None
        try:
            online, extra = OnlineFeatures.restore(spec, path.read_bytes())
        except (ValueError, OSError, KeyError) as exc:
            log.warning("feature snapshot %s not used (%s); rebuilding from the lake", path, exc)
            return None
        position = int(extra["position"])
        if position > upto:  # cannot happen with the commit-then-snapshot order; be safe
            log.warning("feature snapshot is ahead of the bus; rebuilding from the lake")
            return None
        self.online = online
        self._last = {m: int(v) for m, v in extra["last"].items()}
        self._resets = {(m, int(ts)) for m, ts in extra["resets"]}
        self._events_version = extra["events_version"]
        return position

    def start(self) -> None:
        self.bootstrap()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pitstop-processor", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="pitstop-follow-aliases", daemon=True)
        self._thread.start()
        self._watcher.start()

    def stop(self, drain: bool = True, timeout: float = 60.0) -> None:
        """Stop the loop; with ``drain``, first process everything already on the bus."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._watcher is not None:
            self._watcher.join(timeout)
            self._watcher = None
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
        self._follow_serving_model()
        self._sync_resets()  # events (a failure, a repair) count even while no readings arrive
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
        self._count_missing(clean)
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

        self._feed(clean)
        for machine_id, seq in fresh.group_by("machine_id").agg(pl.col("seq").max()).iter_rows():
            self._last[machine_id] = int(seq)

        scored_ids = sorted(set(clean["machine_id"].to_list()))
        scores: dict[str, Score] = {}
        shadow: dict[str, Score] = {}
        features: dict[str, np.ndarray] = {}
        if scored_ids:
            matrix = online.get(scored_ids)
            scoring_started = time.perf_counter()
            scores, shadow = self._score(scored_ids, matrix)
            self.p.metrics.scoring_seconds.observe(time.perf_counter() - scoring_started)
            features = dict(zip(scored_ids, matrix, strict=True))
            self._watch_drift(scored_ids, matrix, scores)
        last = fresh.group_by("machine_id").agg(pl.col("seq").last(), pl.col("ts").last())
        counts = dict(fresh.group_by("machine_id").len().iter_rows())
        opened = self._record(last, scores, counts, shadow, features)
        self.p.bus.commit(CONSUMER, position)
        if time.monotonic() - self._snapshot_at >= self.p.settings.feature_snapshot_s:
            self.snapshot()

        metrics = self.p.metrics
        metrics.lake_rows.inc(written)
        metrics.quarantined.inc(held.height)
        metrics.duplicates.inc(total - fresh.height)
        for score in (*scores.values(), *shadow.values()):
            metrics.predictions.labels(score.model_version, score.arm).inc()
        metrics.work_orders_opened.inc(opened)
        metrics.bus_lag.set(self.lag())
        metrics.batch_seconds.observe(time.perf_counter() - started)
        return BatchReport(
            len(messages), total, written, held.height, total - fresh.height, len(scores), opened
        )

    def _watch(self) -> None:
        """The registry side of following the aliases, off the processing loop: a slow or
        unreachable registry (MLflow retries for minutes) never stalls a micro-batch."""
        while not self._stop.wait(max(0.1, self.p.settings.serving_poll_s)):
            try:
                self._poll_registry()
            except Exception:
                log.exception("polling the registry failed")
            every = self.p.settings.retrain_every_s
            if every > 0 and time.monotonic() - self._retrained_at >= every:
                self._retrained_at = time.monotonic()
                self.retrainer.trigger("schedule")

    def _poll_registry(self) -> None:
        self.p.scorer.poll()
        if self.p.challenger is not None:
            self.p.challenger.poll()

    def _follow_serving_model(self) -> None:
        """Between batches: serve the versions the aliases point at now (``pitstop promote`` /
        ``rollback``), as found by the registry poll (the watcher thread's, every
        ``serving_poll_s``; without one, as here when driven by ``run_once``, the poll runs here).
        A version that cannot be loaded is refused, audited, and the current model keeps serving."""
        if self._watcher is None:
            now = time.monotonic()
            if now - self._serving_checked >= self.p.settings.serving_poll_s:
                self._serving_checked = now
                self._poll_registry()
        scorer = self.p.scorer
        if scorer.has_pending:
            before = scorer.model.version
            self._report(scorer, before, scorer.adopt())
            moved = scorer.model.version != before
            if moved and self.online is not None and scorer.model.bundle.spec.hash != self.online.spec.hash:
                self.bootstrap()  # another feature spec: rebuild the online state for it
        challenger = self.p.challenger
        if challenger is not None and challenger.has_pending:
            previous = challenger.model.version if challenger.loaded else None
            self._report(challenger, previous, challenger.adopt())
            self._check_challenger_spec()

    def _report(self, scorer: Scorer, before: str | None, problem: str | None) -> None:
        after = scorer.model.version if scorer.loaded else None
        if problem and problem != self._serving_problem.get(scorer.alias):
            log.warning("%s unchanged (%s): %s", scorer.alias, before, problem)
            self.p.db.audit("processor", "model_refused", alias=scorer.alias, serving=before, reason=problem)
        self._serving_problem[scorer.alias] = problem
        if after != before and after is not None:
            name = scorer.model.name
            log.info("%s now %s version %s (was %s)", scorer.alias, name, after, before)
            if before is not None:
                self.p.metrics.model_info.labels(name, before, scorer.alias).set(0)
            self.p.metrics.model_info.labels(name, after, scorer.alias).set(1)
            self.p.db.audit(
                "processor", "model_switched", alias=scorer.alias, from_version=before, to_version=after
            )

    def _load_challenger(self) -> None:
        """Load the ``challenger`` alias for a shadow, canary or A/B deployment, if there is one."""
        challenger = self.p.challenger
        if challenger is None:
            return
        try:
            model = challenger.reload()
        except ModelError as exc:
            if self._serving_problem.get("challenger") != exc.message:
                log.warning("%s deployment without a challenger: %s", self.p.settings.deployment, exc.message)
            self._serving_problem["challenger"] = exc.message
            return
        self.p.metrics.model_info.labels(model.name, model.version, "challenger").set(1)
        self._check_challenger_spec()

    def _check_challenger_spec(self) -> None:
        """The challenger is scored from the same online features: it must share the spec."""
        challenger = self.p.challenger
        if challenger is None or not challenger.loaded or self.online is None:
            return
        if challenger.model.bundle.spec.hash != self.online.spec.hash:
            reason = (
                f"challenger version {challenger.model.version} has feature spec "
                f"{challenger.model.bundle.spec.hash}, the champion {self.online.spec.hash}"
            )
            log.warning("challenger not served: %s", reason)
            self.p.db.audit("processor", "model_refused", alias="challenger", reason=reason)
            challenger.withdraw()  # until the alias moves

    def _score(self, ids: list[str], features: np.ndarray) -> tuple[dict[str, Score], dict[str, Score]]:
        """Scores acted on (machine state, work orders) and shadow scores (logged only), guarded:
        an arm whose outputs are invalid (not finite, negative, outside their own interval) beyond
        ``guard_invalid_share`` of a batch, or that fails, is withdrawn and the batch scored again.
        A challenger is dropped; the champion is rolled back to the previous champion."""
        for _ in range(3):
            try:
                acting, shadow = self._route(ids, features)
            except Exception as exc:  # a failing challenger is withdrawn; a failing champion raises
                if not self._withdraw_challenger(f"scoring failed: {exc}"):
                    raise
                continue
            bad = _invalid_arms([*acting.values(), *shadow.values()], self.p.settings.guard_invalid_share)
            if not bad:
                return acting, shadow
            reason = f"invalid outputs from arm(s) {', '.join(sorted(bad))}"
            if bad & {"champion", "a"}:
                self._roll_back(reason)
            else:
                self._withdraw_challenger(reason)
        raise ModelError("no serving model gives valid outputs", code="serving_invalid")

    def _withdraw_challenger(self, reason: str) -> bool:
        challenger = self.p.challenger
        if challenger is None or not challenger.loaded:
            return False
        version = challenger.withdraw()
        self._serving_problem["challenger"] = reason
        log.error("challenger version %s withdrawn: %s", version, reason)
        self.p.db.audit("guard", "challenger_withdrawn", version=version, reason=reason)
        return True

    def _roll_back(self, reason: str) -> None:
        from pitstop.serving.deploy import rollback

        bad = self.p.scorer.model.version
        log.error("champion version %s rolled back: %s", bad, reason)
        rollback(self.p, actor="guard")  # raises when there is nothing to roll back to
        self.p.scorer.reload()
        self.p.db.audit(
            "guard",
            "champion_rolled_back",
            from_version=bad,
            to_version=self.p.scorer.model.version,
            reason=reason,
        )

    def _route(self, ids: list[str], features: np.ndarray) -> tuple[dict[str, Score], dict[str, Score]]:
        """By the deployment: the champion for every machine, or the challenger for a stable share
        of them (canary, ab), or beside it (shadow)."""
        mode = self.p.settings.deployment
        challenger = self.p.challenger
        if mode == "champion" or challenger is None or not challenger.loaded:
            return dict(zip(ids, self.p.scorer.score_matrix(features), strict=True)), {}
        if mode == "shadow":
            acting = dict(zip(ids, self.p.scorer.score_matrix(features), strict=True))
            return acting, dict(zip(ids, challenger.score_matrix(features, arm="shadow"), strict=True))
        share = self.p.settings.challenger_percent
        to_challenger = np.array([bucket(m) < share for m in ids], dtype=bool)
        arms = ("canary", "champion") if mode == "canary" else ("b", "a")
        acting = {}
        for scorer, rows, arm in (
            (challenger, to_challenger, arms[0]),
            (self.p.scorer, ~to_challenger, arms[1]),
        ):
            if rows.any():
                chosen = [m for m, r in zip(ids, rows, strict=True) if r]
                acting.update(zip(chosen, scorer.score_matrix(features[rows], arm=arm), strict=True))
        return acting, {}

    def _fresh(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Rows above every seq their machine had before them (processed earlier, or earlier in this
        batch in bus order), grouped by machine in bus order. The others are re-sends or late."""
        ids = frame["machine_id"].unique().to_list()
        last = pl.DataFrame(
            {"machine_id": ids, "_last": [self._last.get(m, -1) for m in ids]},
            schema={"machine_id": pl.String, "_last": pl.Int64},
        )
        before = pl.max_horizontal(pl.col("seq").cum_max().shift(1).over("machine_id"), pl.col("_last"))
        return (
            frame.join(last, on="machine_id", how="left")
            .sort("machine_id", maintain_order=True)
            .filter(pl.col("seq") > before)
            .drop("_last")
        )

    def _record(
        self,
        last: pl.DataFrame,
        scores: dict[str, Score],
        counts: dict[str, int],
        shadow: dict[str, Score] | None = None,
        features: dict[str, np.ndarray] | None = None,
    ) -> int:
        """Machine state, predictions and work orders in one transaction, one flush. Shadow scores
        are logged as predictions only."""
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
                    state = states[machine_id] = MachineState(machine_id=machine_id, readings=0)
                    s.add(state)
                state.last_ts = ts
                state.last_seq = seq
                state.readings = (state.readings or 0) + counts.get(machine_id, 0)
                if shadow and machine_id in shadow:
                    predictions.append(_prediction(machine_id, ts, seq, shadow[machine_id], now))
                score = scores.get(machine_id)
                if score is None:
                    continue
                state.predicted_rul = score.rul
                state.rul_lower = score.lower
                state.rul_upper = score.upper
                state.model_version = score.model_version
                state.scored_at = now
                predictions.append(_prediction(machine_id, ts, seq, score, now))
            s.add_all(predictions)
            readings = {m: Reading(int(seq), ts) for m, seq, ts in last.iter_rows()}
            opened = open_work_orders(
                s,
                self.p.policy_for,
                scores,
                readings,
                states,
                self._machine_types(sorted(scores)),
                lambda machine_id, machine_type, score, priority: self._explain(
                    machine_id, machine_type, score, priority, features or {}
                ),
                self.p.notifier,
            )
        return len(opened)

    def _machine_types(self, ids: list[str]) -> dict[str, str]:
        """Machine types of ``ids``, from a cache filled from the ops DB once per new machine."""
        unknown = [m for m in ids if m not in self._types]
        if unknown:
            with self.p.db.session() as s:
                query = select(Machine.machine_id, Machine.machine_type).where(
                    Machine.machine_id.in_(unknown)
                )
                self._types.update({m: t for m, t in s.execute(query)})
        return {m: self._types.get(m, "") for m in ids}

    def _count_missing(self, clean: pl.DataFrame) -> None:
        """Data quality: values of sensors a machine's type declares that its readings lack
        (optional sensors; required ones are refused at intake)."""
        if clean.height == 0:
            return
        types: dict[str, str] | None = None
        for machine_type in self.p.fleet.machine_types.values():
            optional = [s.name for s in machine_type.sensors if not s.required and s.name in clean.columns]
            if not optional:
                continue
            types = types or self._machine_types(clean["machine_id"].unique().to_list())
            ids = [m for m, t in types.items() if t == machine_type.name]
            rows = clean.filter(pl.col("machine_id").is_in(ids))
            for sensor, n in zip(optional, rows.select(pl.col(optional).null_count()).row(0), strict=True):
                if n:
                    self.p.metrics.missing_values.labels(sensor).inc(n)

    def _watch_drift(self, ids: list[str], matrix: np.ndarray, scores: dict[str, Score]) -> None:
        """The scored rows into the live drift windows (against the champion's training profile)."""
        types = self._machine_types(ids)
        bundle = self.p.scorer.model.bundle
        predictions = np.array([scores[m].rul if m in scores else np.nan for m in ids])
        try:
            self.drift.observe(
                bundle.reference,
                bundle.spec.names,
                matrix,
                predictions,
                [types[m] for m in ids],
            )
        except Exception:  # monitoring must never stop scoring
            log.exception("drift check failed")

    def _drift_report(self, report: DriftReport, raised: dict[str, list[str]], cleared: list[str]) -> None:
        metrics = self.p.metrics
        metrics.drift_checks.labels(report.scope).inc()
        for f in report.features:
            metrics.drift_psi.labels(report.scope, f.name).set(f.psi)
        if report.prediction is not None:
            metrics.drift_psi.labels(report.scope, report.prediction.name).set(report.prediction.psi)
        for sensor, features in raised.items():
            metrics.drift_alert.labels(report.scope, sensor).set(1)
            self.p.db.audit(
                "monitor",
                "drift_alert",
                scope=report.scope,
                sensor=sensor,
                features=features,
                rows=report.rows,
            )
        if raised and self.p.settings.retrain_on_drift and self.retrainer.trigger("drift"):
            log.warning("retraining on drift (%s: %s)", report.scope, ", ".join(raised))
        for sensor in cleared:
            metrics.drift_alert.labels(report.scope, sensor).set(0)
            self.p.db.audit("monitor", "drift_cleared", scope=report.scope, sensor=sensor)

    def _explain(
        self, machine_id: str, machine_type: str, score: Score, priority: str, features: dict[str, np.ndarray]
    ) -> Explanation | None:
        """Why the model that gave ``score`` predicts what it does for the machine (only asked when
        a work order opens): the sensors that pushed the RUL down, the suspected component."""
        row = features.get(machine_id)
        if row is None:
            return None
        scorer = self.p.scorer
        challenger = self.p.challenger
        if challenger is not None and challenger.loaded and challenger.model.version == score.model_version:
            scorer = challenger
        try:
            return self.p.components.explain(scorer.model.bundle, row, machine_type, priority)
        except Exception:  # an explanation is a courtesy: the work order opens without one
            log.exception("could not explain the prediction for %s", machine_id)
            return None


def _prediction(machine_id: str, ts: datetime, seq: int, score: Score, now: datetime) -> Prediction:
    return Prediction(
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
        from_cache=score.from_cache,
    )


def _invalid_arms(scores: list[Score], allowed_share: float) -> set[str]:
    """Arms with more than ``allowed_share`` of invalid scores (``invalid_outputs``)."""
    if not scores:
        return set()
    arms = np.array([sc.arm for sc in scores])
    bad = invalid_outputs(*np.array([(sc.rul, sc.lower, sc.upper) for sc in scores]).T)
    return {str(arm) for arm in np.unique(arms) if bad[arms == arm].mean() > allowed_share}
