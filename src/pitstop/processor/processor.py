from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from sqlalchemy import select

from pitstop.bus import Bus
from pitstop.errors import PitstopError, first_line
from pitstop.features import OnlineFeatures
from pitstop.features.store import OnlineStore
from pitstop.lake.upkeep import LakeUpkeep, UpkeepPolicy
from pitstop.maintenance import PolicyState, RiskPolicy
from pitstop.monitoring.canary import Canary, CanaryOptions
from pitstop.monitoring.live import LiveMonitor
from pitstop.monitoring.monitor import DriftMonitor
from pitstop.monitoring.retrain import Retrainer
from pitstop.platform import Platform
from pitstop.processor.record import Recorder, recorded_position, reset_recorded_position
from pitstop.processor.state import Lane, MachineTypes, StreamState, feed
from pitstop.processor.upkeep import UpkeepThread
from pitstop.registry.pins import pins_of
from pitstop.schema import decode_table
from pitstop.serving import Score
from pitstop.store import MachineState

log = logging.getLogger(__name__)

CONSUMER = "processor"

# a lane's scored rows for the drift windows: the model's reference profile and feature names,
# the feature matrix, the predictions, each row's machine type and machine
Observed = tuple[dict[str, dict[str, Any]], list[str], np.ndarray, np.ndarray, list[str], list[str]]


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
    3. per machine type (a lane: the type's deployment and online state), update its machines'
       online features and score them at their latest reading with the type's own model;
    4. write machine state, predictions and work orders to the ops DB;
    5. commit the bus position.

    Late readings (a seq at or below the highest its machine had before, in bus order) are
    dropped as re-sends. Every ``feature_snapshot_s`` the online state is saved after a commit,
    for a fast restart. A machine type without a champion yet is not scored; its lane is built
    from the lake when its first model is registered.
    """

    def __init__(
        self,
        platform: Platform,
        *,
        bus: Bus | None = None,
        consumer: str = CONSUMER,
        machines: Callable[[str], bool] | None = None,
        leader: bool = True,
        state_dir: Path | None = None,
        fence: Callable[[], None] | None = None,
        store: OnlineStore | None = None,
    ) -> None:
        """The processor of the whole bus, or (scale-out) of one partition: ``bus`` is then the
        partition's view, ``consumer`` its own name (also the lake's app id and the ops DB's position
        key), ``machines`` tells its machines (for rebuilds from the lake), and only the ``leader``
        (partition 0's owner) does the fleet-wide duties: lake upkeep, canary steps, retraining.
        Each machine's current feature row is published to ``store`` (the API's online features)."""
        self.p = platform
        self.bus: Bus = bus if bus is not None else platform.bus
        self.consumer = consumer
        self.leader = leader
        self._mine = machines
        self._fence = fence
        self._committed: int | None = None  # the bus position this processor committed last
        settings = platform.settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None  # polls the registry for the aliases
        self.errors = 0
        self.store = store if store is not None else OnlineStore()
        self.lanes = {name: Lane(name, d) for name, d in platform.deployments.items()}
        self.state = StreamState(
            self.lanes, platform.lake, state_dir or settings.data_dir / "state", self._active
        )
        self._snapshot_at = time.monotonic()
        self._serving_checked = time.monotonic()
        self.restored_from: int | None = None  # the bus position of the snapshot bootstrap used
        self._recorded = 0  # the last bus position whose results are in the ops DB
        self.types = MachineTypes(platform.db, list(self.lanes), platform.default_type)
        self.retrainer = Retrainer(platform)
        self._retrained_at = time.monotonic()
        self.monitor = LiveMonitor(
            settings,
            platform.metrics,
            platform.db.audit,
            self.retrainer.trigger if leader else _not_leader,
            platform.db,
            platform.policy_for,
            fleet_scope=False,  # type scopes only: with one type a fleet scope would double each alert
        )
        canary = CanaryOptions.from_settings(settings)
        self.canaries = {  # progressive canaries, stepped between batches
            name: Canary(lane.deployment, platform.db, canary)
            for name, lane in self.lanes.items()
            if canary.enabled and lane.deployment.options.mode == "canary"
        }
        self.recorder = Recorder(platform.db, platform.policy_for, platform.components, platform.notifier)
        pins = pins_of(d.registry for d in platform.deployments.values())  # model lineage: kept
        self.upkeep = UpkeepThread(
            LakeUpkeep(platform.lake, pins, UpkeepPolicy.from_settings(settings)),
            settings.lake_upkeep_every_s if leader else 0.0,
        )

    def _check_lease(self) -> None:
        if self._fence is not None:
            self._fence()

    def _active(self) -> dict[str, list[str]]:
        """Active machines by lane: this processor's own (a partition's) when it has a share."""
        active = self.types.active()
        if self._mine is None:
            return active
        return {t: [m for m in ids if self._mine(m)] for t, ids in active.items()}

    @property
    def online(self) -> OnlineFeatures | None:
        """The first machine type's online state (a fleet of one type: the only one)."""
        return self.lanes[self.p.default_type].online

    @online.setter
    def online(self, value: OnlineFeatures | None) -> None:
        self.lanes[self.p.default_type].online = value

    @property
    def drift(self) -> DriftMonitor:
        return self.monitor.drift

    # -- lifecycle -------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Load each type's serving model and bring the online state up to the committed bus
        position: from the newest snapshot for the lanes whose spec it matches (then only lake
        rows past it are replayed), else from the lake."""
        for lane in self.lanes.values():
            if self.bus is self.p.bus or not lane.deployment.ready:  # a partition's: shared, loaded once
                lane.deployment.load()
        for canary in self.canaries.values():
            canary.sync()  # the step a canary had reached, before the first batch is routed
        self.monitor.resume()  # drift and quality alerts still firing clear like new ones
        upto = self.bus.position(self.consumer)
        self._committed = upto
        self._recorded = self._recorded_position(upto)
        restored = self.restored_from = self.state.load(upto)
        if restored is None:
            self.state.last, self.state.resets, self.state.events_version = {}, set(), None
        self._sync_resets()
        for lane in self.lanes.values():
            if lane.online is None:
                self.state.rebuild(lane, upto)
            else:
                self.state.replay(lane, restored or 0, upto)
                self.state.rebuild_challenger(lane, upto)  # not in snapshots: rebuilt
            self._publish_lane(lane)
        self.state.recount(restored, upto)

    def _sync_resets(self) -> None:
        """Register reset events (maintenance, failure) the lanes have not seen yet; score the
        live predictions before a new failure."""
        version = self.p.lake.version("events")
        if version == self.state.events_version:
            return
        events = self.p.lake.read("events", columns=["machine_id", "ts", "seq", "kind"])
        if self._mine is not None:  # a partition's processor: its machines' events only
            mine = self._mine
            events = events.filter(pl.col("machine_id").map_elements(mine, return_dtype=pl.Boolean))
        types = self.types.of(events["machine_id"].unique().to_list())
        episodes = set()
        failures: list[tuple[str, int, int, int]] = []  # machine, failure seq and µs, the reset before
        previous: dict[str, int] = {}
        for machine_id, ts, seq, kind in (
            events.filter(pl.col("kind").is_in(["maintenance", "failure"]))
            .select("machine_id", pl.col("ts").dt.epoch("us"), "seq", "kind")
            .sort("ts")
            .iter_rows()
        ):
            if (machine_id, ts) not in self.state.resets:
                self.state.resets.add((machine_id, ts))
                lane = self.lanes.get(types.get(machine_id, ""))
                if lane is not None and lane.online is not None and kind in lane.online.spec.reset_events:
                    lane.online.reset(machine_id, ts)
                episodes.add(machine_id)
                if kind == "failure" and seq is not None and self.state.events_version is not None:
                    failures.append((machine_id, int(seq), previous.get(machine_id, -1), ts))
            if seq is not None:
                previous[machine_id] = int(seq)
        for machine_id, seq, since, ts in failures:  # live performance, now that the truth is known
            self.monitor.failure(machine_id, seq, since, types.get(machine_id) or None, ts)
        if episodes:  # a new episode: the risk policy is armed again
            with self.p.db.session() as s:
                for state in s.scalars(
                    select(MachineState).where(MachineState.machine_id.in_(sorted(episodes)))
                ):
                    memory = PolicyState(state.policy_armed, False, state.policy_rearm_seq)
                    RiskPolicy.reset(memory)
                    state.policy_armed, state.policy_rearm_seq = memory.armed, memory.rearm_seq
        self.state.events_version = version

    def snapshot(self) -> None:
        """Save the online state at the bus position this processor committed last (another owner
        may have moved the consumer since: its position is not this state's)."""
        self._check_lease()
        self.state.save(self._committed if self._committed is not None else self.bus.position(self.consumer))
        self._snapshot_at = time.monotonic()

    def start(self, freeze: bool = False) -> None:
        """Bootstrap, then process in a thread. ``freeze`` (a process that is only a processor):
        what start-up built, the models and the online state, lives as long as the process, so it
        is moved out of the collector's full passes, which otherwise walk all of it every few
        batches (pauses of 0.1-0.4 s measured at 130k readings/s); garbage is collected first."""
        self.bootstrap()
        if freeze:
            gc.collect()
            gc.freeze()
        self.upkeep.start()  # its table properties first: no append is in flight yet
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pitstop-processor", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="pitstop-follow-aliases", daemon=True)
        self._thread.start()
        self._watcher.start()

    def stop(self, drain: bool = True, timeout: float = 60.0) -> None:
        """Stop the loop; with ``drain``, first process everything already on the bus."""
        self._stop.set()
        self.upkeep.stop(timeout)
        for thread in (self._thread, self._watcher):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._watcher = None
        if drain:
            deadline = time.monotonic() + timeout
            while self.lag() > 0 and time.monotonic() < deadline:
                self.run_once()

    def lag(self) -> int:
        """Messages behind (a partition counts its own: its positions skip the others')."""
        backlog = getattr(self.bus, "backlog", None)
        if backlog is not None:
            return int(backlog())
        return self.bus.head() - self.bus.position(self.consumer)

    def _run(self) -> None:
        settings = self.p.settings
        failing: str | None = None  # the failure last logged: a lasting one (a full disk) is said once
        failed, backoff = 0, 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                report = self.run_once()
            except Exception as exc:  # keep the loop alive; the batch is retried from the bus
                self.errors += 1
                failed += 1
                what = f"{type(exc).__name__}: {exc}"
                if what != failing:
                    _log_failure(exc)
                    failing = what
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)
                continue
            if failing is not None:
                log.warning("processor batches succeed again, after %d failed attempts", failed)
                failing, failed, backoff = None, 0, 1.0
            if report.messages == 0:
                self._stop.wait(settings.processor_poll_s)
            elif report.messages < settings.processor_max_messages:
                # not behind: let readings gather so the fixed cost of each commit is shared
                self._stop.wait(max(0.0, settings.processor_batch_interval_s - (time.monotonic() - started)))

    def _recorded_position(self, upto: int) -> int:
        """Where the ops DB's results end. A crash between the ops-DB commit and the bus commit
        leaves it one batch past the bus position; much further (or past the bus's head) means the
        bus was replaced (a new backend, a restore): then the bus position counts."""
        recorded = recorded_position(self.p.db, self.consumer)
        # a partition's positions skip the other partitions' sequence numbers: only the head bounds them
        spread = self.p.settings.processor_max_messages if self.bus is self.p.bus else None
        if recorded > self.bus.head() or (spread is not None and recorded > upto + spread):
            log.warning("the ops DB's processor position %d does not fit this bus: using %d", recorded, upto)
            reset_recorded_position(self.p.db, self.consumer, upto)
            return upto
        return recorded

    def _drain_outbox(self) -> None:
        try:
            self.p.outbox.drain()
        except PitstopError as exc:
            log.warning("lake outbox not drained this batch: %s", exc.message)
        except Exception:  # never let the outbox stop the stream; its rows wait for the next batch
            log.exception("lake outbox not drained this batch")

    # -- one micro-batch ---------------------------------------------------------------------
    def run_once(self) -> BatchReport:
        started = time.perf_counter()
        self._drain_outbox()  # work-order events a crash or a lake error left in the ops DB
        self._sync_resets()  # events (a failure, a repair) count even while no readings arrive
        self._follow_serving_models()  # after: a lane rebuilt here sees every event registered
        messages = self.bus.read(self.consumer, self.p.settings.processor_max_messages)
        if not messages:
            self.p.metrics.bus_lag.set(0)
            return BatchReport(0, 0, 0, 0, 0, 0, 0)
        position = messages[-1].position
        tables = [decode_table(m.payload) for m in messages]
        # one chunk: a frame of a chunk per message (hundreds of small batches) costs polars
        # several times more to build, and every step after it more to run
        table = pa.concat_tables(tables, promote_options="default").combine_chunks()
        positions = np.repeat([m.position for m in messages], [t.num_rows for t in tables])
        frame = pl.from_arrow(table.append_column("bus_position", pa.array(positions, pa.int64())))
        assert isinstance(frame, pl.DataFrame)
        total = frame.height
        fresh = self.state.fresh(frame)
        clean = fresh.filter(pl.col("quarantine").is_null())
        held = fresh.filter(pl.col("quarantine").is_not_null())
        types = self.types.of(fresh["machine_id"].unique().to_list())
        written = self._append_to_lake(fresh, position)

        scores: dict[str, Score] = {}
        shadow: dict[str, Score] = {}
        features: dict[str, np.ndarray] = {}
        observed: list[Observed] = []
        for lane in self.lanes.values():
            ids = sorted(m for m, t in types.items() if t == lane.machine_type)
            if not ids or not lane.ready:
                continue
            rows = clean.filter(pl.col("machine_id").is_in(ids))
            for online in lane.online_states():
                feed(online, rows)
            ids = sorted(set(ids) & set(clean["machine_id"].to_list()))
            if not ids:
                continue
            try:
                observed.append(self._score_lane(lane, ids, scores, shadow, features))
            except Exception as exc:  # one type's broken model must not stop the others
                log.exception(
                    "scoring %s failed; its machines are not scored in this batch", lane.machine_type
                )
                self.p.metrics.scoring_failures.labels(lane.machine_type).inc()
                if lane.deployment.problems.get("scoring") != str(exc):
                    self.p.db.audit(
                        "processor", "scoring_failed", machine_type=lane.machine_type, error=str(exc)
                    )
                lane.deployment.problems["scoring"] = str(exc)
        self._check_lease()
        opened = self._record(fresh, position, scores, shadow, types, features)
        for machine_id, seq in fresh.group_by("machine_id").agg(pl.col("seq").max()).iter_rows():
            self.state.last[machine_id] = int(seq)  # only now: a batch that fails is read again whole
        self._check_lease()
        self.bus.commit(self.consumer, position)
        self._committed = position
        self._monitor(fresh, types, observed)
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

    def _monitor(self, fresh: pl.DataFrame, types: dict[str, str], observed: list[Observed]) -> None:
        """Data quality and drift once the batch's results are stored: the lake and the work
        orders do not wait for them. The batch is committed, so a check that fails is logged and
        skipped, never retried (a crash here skips one batch's checks, never its readings)."""
        checks = [partial(self.monitor.check_quality, fresh, self.p.fleet, types)]
        checks += [partial(self.monitor.observe, *rows) for rows in observed]
        for check in checks:
            try:
                check()
            except Exception:
                log.exception("monitoring failed on this batch (its readings are stored)")

    def _record(
        self,
        fresh: pl.DataFrame,
        position: int,
        scores: dict[str, Score],
        shadow: dict[str, Score],
        types: dict[str, str],
        features: dict[str, np.ndarray],
    ) -> int:
        """The batch's results into the ops DB, except what a transaction before a crash recorded
        already (readings at or below ``self._recorded``). Returns the work orders opened."""
        new = fresh.filter(pl.col("bus_position") > self._recorded)
        if new.height == 0:
            return 0
        machines = set(new["machine_id"].unique().to_list())
        last = new.group_by("machine_id").agg(pl.col("seq").last(), pl.col("ts").last())
        counts = dict(new.group_by("machine_id").len().iter_rows())
        opened = self.recorder.record(
            last,
            {m: s for m, s in scores.items() if m in machines},
            counts,
            types,
            {m: s for m, s in shadow.items() if m in machines},
            features,
            lambda t: self.lanes[t].deployment,
            self.consumer,
            position,
        )
        self._recorded = position
        return opened

    def _append_to_lake(self, fresh: pl.DataFrame, position: int) -> int:
        lake_frame = fresh.with_columns(pl.col("ts").dt.date().alias("day"))
        written = 0
        for table, rows in (
            ("telemetry", lake_frame.filter(pl.col("quarantine").is_null()).drop("quarantine")),
            (
                "quarantine",
                lake_frame.filter(pl.col("quarantine").is_not_null()).rename({"quarantine": "reason"}),
            ),
        ):
            already = self.p.lake.committed_position(self.consumer, table)
            rows = rows.filter(pl.col("bus_position") > already)
            if rows.height:
                self._check_lease()
                # the rows past the app's position are picked again on the table version the
                # commit checks against: another owner may have committed since ``already``
                appended = self.p.lake.append(
                    table,
                    rows.to_arrow(),
                    app_id=self.consumer,
                    position=position,
                    skip_committed="bus_position",
                )
                written += rows.height if table == "telemetry" and appended else 0
        return written

    def _score_lane(
        self,
        lane: Lane,
        ids: list[str],
        scores: dict[str, Score],
        shadow: dict[str, Score],
        features: dict[str, np.ndarray],
    ) -> Observed:
        """Score a lane's machines into ``scores``, ``shadow`` and ``features``; returns what the
        drift windows take of them (``LiveMonitor.observe``'s arguments)."""
        assert lane.online is not None
        matrix = lane.online.get(ids)
        self.store.publish(
            lane.machine_type, lane.online, ids, matrix, lane.deployment.champion.model.version
        )
        theirs = lane.challenger_online.get(ids) if lane.challenger_online is not None else None
        started = time.perf_counter()
        acting, logged = lane.deployment.score(ids, matrix, theirs)
        self.p.metrics.scoring_seconds.observe(time.perf_counter() - started)
        scores.update(acting)
        shadow.update(logged)
        features.update(zip(ids, matrix, strict=True))
        bundle = lane.deployment.champion.model.bundle
        predictions = np.array([acting[m].rul if m in acting else np.nan for m in ids])
        return bundle.reference, bundle.spec.names, matrix, predictions, [lane.machine_type] * len(ids), ids

    def _publish_lane(self, lane: Lane) -> None:
        """Every machine of a (re)built lane into the online store, replacing what it held."""
        online = lane.online
        if online is None or not lane.deployment.ready:
            self.store.drop(lane.machine_type)
            return
        ids = [m for m, slot in online.slots.items() if online.count[slot] >= 1]
        version = lane.deployment.champion.model.version
        matrix = online.get(ids) if ids else np.zeros((0, len(online.spec.names)))
        self.store.publish(lane.machine_type, online, ids, matrix, version, replace=True)

    # -- following the registry ------------------------------------------------------------------
    def _watch(self) -> None:
        """The registry side of following the aliases, off the processing loop: a slow or
        unreachable registry (MLflow retries for minutes) never stalls a micro-batch."""
        while not self._stop.wait(max(0.1, self.p.settings.serving_poll_s)):
            self._poll_registry()
            every = self.p.settings.retrain_every_s
            if every > 0 and time.monotonic() - self._retrained_at >= every:
                self._retrained_at = time.monotonic()
                self.retrainer.trigger("schedule")

    def _poll_registry(self) -> None:
        for lane in self.lanes.values():
            try:
                lane.deployment.poll()
            except Exception:
                log.exception("polling the registry for %s failed", lane.machine_type)

    def _follow_serving_models(self) -> None:
        """Between batches: serve the versions the aliases point at now (``pitstop promote`` /
        ``rollback``), as found by the registry poll (the watcher thread's, every
        ``serving_poll_s``; without one, as here when driven by ``run_once``, the poll runs here).
        A lane whose first model arrived, or whose champion has another feature spec, is rebuilt."""
        if self._watcher is None:
            now = time.monotonic()
            if now - self._serving_checked >= self.p.settings.serving_poll_s:
                self._serving_checked = now
                self._poll_registry()
        for lane in self.lanes.values():
            changed = lane.deployment.follow()
            stale = lane.online is not None and lane.online.spec.hash != lane.deployment.spec_hash
            if changed or stale or (lane.online is None and lane.deployment.ready):
                # a first model, another spec (promotion, or the guard's rollback): rebuild for it
                self.state.rebuild(lane, self.bus.position(self.consumer))
                self._publish_lane(lane)
                continue
            challenger = lane.deployment.challenger
            wanted = (
                challenger.model.bundle.spec.hash if lane.challenger_spec_differs() and challenger else None
            )
            have = lane.challenger_online.spec.hash if lane.challenger_online is not None else None
            if wanted != have:  # a challenger with a spec of its own arrived, left or changed
                self.state.rebuild_challenger(lane, self.bus.position(self.consumer))
        self._step_canaries()

    def _step_canaries(self) -> None:
        """Between batches: each progressive canary's share for the challenger serving now, and
        its evidence weighed (advance, complete, roll back; see ``monitoring.canary``)."""
        for name, canary in self.canaries.items():
            try:
                canary.sync()  # every partition's processor routes by the step the leader set
                if self.leader:
                    canary.check()
            except Exception:  # the canary must never stop the stream; it is weighed again later
                log.exception("the progressive canary of %s could not be weighed", name)


def _not_leader(trigger: str, machine_type: str | None = None) -> bool:
    """A partition's processor that is not the leader leaves retraining to the leader's."""
    log.info("retrain trigger %s left to the leading processor (partition 0's owner)", trigger)
    return False


def _log_failure(exc: Exception) -> None:
    """One line for a failure the operator must fix (a full or read-only disk, a store that is
    down), a traceback for anything else. Either way the batch is retried, with a growing wait."""
    lowered = str(exc).lower()
    if isinstance(exc, PitstopError) or any(
        sign in lowered for sign in ("disk is full", "no space left", "read-only", "readonly")
    ):
        log.error("processor batch failed, retrying with backoff until it succeeds: %s", first_line(exc))
    else:
        log.exception("processor batch failed; retrying with backoff")
