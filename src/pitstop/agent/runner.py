"""The agent: a source thread that buffers, a sender thread that forwards, edge scoring beside them.

Source thread: read a chunk, stamp each reading with the clocks (boot, monotonic, wall), commit
them and the source's position to the buffer (fsynced), then acknowledge them to the source, then
hand them to the edge scorer.

Sender thread: say hello to the server (its clock, and the machine's last seq), then send the
oldest readings in seq order, one batch at a time, and remove them after the 202. Failures back
off with equal jitter (``agent_retry_max_s`` at most, the server's ``Retry-After`` at least).
Sending in seq order matters: the server drops a seq at or below the last it accepted.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from importlib import import_module
from typing import IO, Any

from pitstop.agent.buffer import Buffer, Incoming, Row
from pitstop.agent.clock import Clock, SystemClock, iso, judge, placements
from pitstop.agent.config import AgentConfig, read_token
from pitstop.agent.link import STATE, Link, Outcome
from pitstop.agent.sources import Source, SourceError, open_source
from pitstop.agent.status import hold_folder, status
from pitstop.errors import AgentError

__all__ = ["Agent", "AgentConfig", "read_token", "status"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
BACKOFF_BASE_S = 0.5


class Agent:
    """One machine's agent. ``run()`` blocks until ``stop()``; ``start()`` runs it on threads."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        source: Source | None = None,
        link: Link | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.buffer = Buffer(config.folder / "buffer.db", config.buffer_max_readings)
        self.source = source or open_source(config.source, config.machine_id)
        self.link = link or Link(config.server, config.token, compress=config.compress)
        self.batch = config.batch_max
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()  # the source had nothing more, last time it was asked
        self._ended = False
        self._threads: list[threading.Thread] = []
        self._failures = 0
        self._link_state = ""
        self.error: BaseException | None = None
        self.edge: Any = None  # the edge scorer (pitstop.agent.edge), once a model is known
        self._edge_lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self.sensors: frozenset[str] | None = None  # the machine type's, from the server
        self._ignored: set[str] = set()

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._lock_file = hold_folder(self.config.folder)
        self.buffer.put(
            pid=os.getpid(),
            started_us=self.clock.wall_us(),
            machine_id=self.config.machine_id,
            server=self.config.server,
            source=self.config.source,
            link="unknown",
        )
        try:
            self.source.open(self.buffer.get("source_position"))
        except SourceError as exc:
            raise AgentError(f"source {self.config.source!r}: {exc}", code="agent_source") from exc
        if self.config.edge_scoring:
            self._start_edge()
        for name, target in (("read", self._read_loop), ("send", self._send_loop)):
            thread = threading.Thread(target=self._guard(target), name=f"pitstop-agent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def run(self) -> None:
        self.start()
        try:
            while not self._stop.is_set():
                self._stop.wait(HEARTBEAT_S)
                if not self._stop.is_set():
                    self.buffer.put(heartbeat_us=self.clock.wall_us())
        finally:
            self.stop()
        if self.error is not None:
            raise AgentError(f"the agent stopped: {self.error}", code="agent_failed") from self.error

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.source.close()
        self.link.close()
        if not self.buffer.closed:
            self.buffer.put(pid=0, link="stopped")
            self.buffer.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the folder
            self._lock_file = None

    def request_stop(self) -> None:
        """Ask ``run()`` to return (from a signal handler: sets an event, nothing more)."""
        self._stop.set()
        self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _guard(self, target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # a thread that dies stops the agent, loudly
                log.exception("agent thread %s failed", threading.current_thread().name)
                self.error = exc
                self._stop.set()
                self._wake.set()

        return run

    # -- source → buffer ---------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self._stop.is_set():
            chunk = self.source.read(0.5)
            if chunk is None or not (chunk.readings or chunk.errors):
                self._idle.set()
                if getattr(self.source, "ended", False) and not self._ended:
                    self._ended = True
                    self.buffer.put(source_ended=1)
                    log.warning("the source has ended (%s): forwarding what is buffered", self.config.source)
                continue
            self._idle.clear()
            for error in chunk.errors[:5]:
                log.warning("source: %s", error)
            boot, mono, wall = self.clock.boot(), self.clock.mono_us(), self.clock.wall_us()
            incoming = [Incoming(r.values, boot, mono, wall, r.ts_us) for r in chunk.readings]
            meta: dict[str, Any] = {}
            if chunk.position is not None:
                meta["source_position"] = chunk.position
            if chunk.errors:
                meta["source_errors"] = int(self.buffer.get("source_errors", 0) or 0) + len(chunk.errors)
            seqs = self.buffer.append(incoming, **meta)
            self.source.ack(chunk.position)
            if seqs:
                self._wake.set()
                self._observe(seqs, incoming)

    # -- buffer → server ---------------------------------------------------------------------------
    def _send_loop(self) -> None:
        greeted = False
        while not self._stop.is_set():
            if not greeted:
                greeted = self._hello()
                if not greeted:
                    continue
            rows = self.buffer.oldest(self.batch)
            if not rows:
                self._wake.clear()
                self._wake.wait(self.config.send_interval_s)
                continue
            if len(rows) < self.batch and self._failures == 0:
                # a partial batch: give the source up to the send interval to fill it (a source that
                # hands over one reading at a time wakes us for each; that is no reason to send)
                deadline = time.monotonic() + self.config.send_interval_s
                while self.buffer.depth < self.batch and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.clear()
                    self._wake.wait(left)
                if self._stop.is_set():
                    continue
                rows = self.buffer.oldest(self.batch)
            greeted = self._send(rows)

    def _hello(self) -> bool:
        """The server's clock, the machine's last seq and sensors: nothing is sent before these
        (a new buffer must start above the seqs the server holds, or its readings would be
        taken for re-sends)."""
        out = self.link.hello(self.clock.mono_us)
        if out.kind == "delivered":
            self._learn_clock(out)
            last = out.body.get("last_seq")
            if isinstance(last, int):
                self._sync_seq(last)
            sensors = out.body.get("sensors")
            if isinstance(sensors, list):
                self.sensors = frozenset(str(s) for s in sensors)
            self._ok()
            return True
        if out.kind == "unsupported":
            out.message = (
                f"{self.config.server} answers 404 for {STATE}: not a Pitstop server this agent can use "
                "(check --server, or a proxy that must pass /api/v1/agent/)"
            )
            out.kind = "retry"
        self._failed(out)
        return False

    def _send(self, rows: list[Row]) -> bool:
        """One batch: True to go on, False to say hello again first."""
        readings, estimated, bad = self._stamp(rows)
        if bad:
            self.buffer.reject(rows, bad)
            log.error("%d readings have a time that cannot be sent: kept in the rejected table", len(bad))
            return True
        before = int(self.buffer.get("attempted_upto", -1))
        self.buffer.put(attempted_upto=max(rows[-1].seq, before))
        out = self.link.post(readings, self.clock.mono_us)
        if out.kind == "delivered":
            self._learn_clock(out)
            dupes = int(out.body.get("duplicates", 0) or 0)
            fresh = rows[0].seq > before  # none of these was ever sent
            self.buffer.remove_through(
                rows[-1].seq,
                last_send_us=self.clock.wall_us(),
                sent=int(self.buffer.get("sent", 0) or 0) + len(rows) - dupes,
                duplicates=int(self.buffer.get("duplicates", 0) or 0) + dupes,
                clock_estimated=int(self.buffer.get("clock_estimated", 0) or 0) + estimated,
                **(
                    {"seq_conflicts": int(self.buffer.get("seq_conflicts", 0) or 0) + dupes}
                    if fresh and dupes
                    else {}
                ),
            )
            self.batch = min(self.config.batch_max, self.batch * 2)
            self._ok()
            if fresh and dupes:  # another sender wrote seqs for this machine: say hello again
                log.error(
                    "the server already held seqs %d-%d for %s from another sender: %d readings were "
                    "taken for re-sends (counted as seq_conflicts); numbering again above the server's",
                    rows[0].seq,
                    rows[min(dupes, len(rows)) - 1].seq,
                    self.config.machine_id,
                    dupes,
                )
                return False
            return True
        self.buffer.release()
        if out.kind == "too_large":
            self.batch = max(1, len(rows) // 2)
            log.warning(
                "the server refused a batch of %d as too large: sending %d at a time", len(rows), self.batch
            )
            return True
        if out.kind == "refused" and any(0 <= i < len(rows) for i in out.problems):
            self._refused(rows, out)
            return True
        if out.kind == "refused":  # not about any one reading: keep them all, wait, try again
            out.kind = "retry"
        self._failed(out)
        return out.kind not in ("retry", "unsupported")  # after a failure, say hello again (clock, seq)

    def _refused(self, rows: list[Row], out: Outcome) -> None:
        """Set aside the readings the server named (422 with their indexes); the rest go on."""
        problems = {rows[i].seq: p for i, p in out.problems.items() if 0 <= i < len(rows)}
        count = self.buffer.reject(rows, problems)
        first = next(iter(problems.values()), ("?", ""))
        log.error(
            "the server refused %d of %d readings (HTTP %s, e.g. %s: %s); kept in the agent's rejected table",
            count,
            len(rows),
            out.status,
            first[0],
            first[1][:200],
        )

    def _ok(self) -> None:
        self._failures = 0
        if self._link_state != "up":
            self._link_state = "up"
            self.buffer.put(link="up", link_since_us=self.clock.wall_us(), last_error="")
            log.info("link to %s is up", self.config.server)

    def _failed(self, out: Outcome) -> None:
        state = "denied" if out.kind == "denied" else "down"
        if out.status is not None and out.status < 500 and out.kind == "retry" and out.status != 429:
            state = "error"  # e.g. a 404: the server URL is probably wrong; readings are kept
        if self._link_state != state:
            self._link_state = state
            self.buffer.put(link=state, link_since_us=self.clock.wall_us(), last_error=out.message[:300])
            log.log(
                logging.ERROR if state == "denied" else logging.WARNING,
                "link to %s is %s: %s%s",
                self.config.server,
                state,
                f"HTTP {out.status} " if out.status else "",
                out.message[:200],
            )
        self._failures += 1
        ceiling = min(self.config.retry_max_s, BACKOFF_BASE_S * 2 ** min(self._failures, 30))
        delay = random.uniform(ceiling / 2, ceiling)  # equal jitter, so a fleet does not retry in step
        if out.retry_after is not None:
            delay = max(delay, min(out.retry_after, self.config.retry_max_s))
        self._stop.wait(delay)

    # -- clocks and seqs ---------------------------------------------------------------------------
    def _learn_clock(self, out: Outcome) -> None:
        if out.server_us is None:
            return
        boot = self.clock.boot()
        current = self.buffer.offset(boot)
        anchor = judge(
            boot, out.sent_mono, out.got_mono, self.clock.wall_us(), out.server_us,
            self.config.clock_tolerance_s, current,
        )  # fmt: skip
        if anchor is None:
            return
        self.buffer.set_offset(boot, anchor.offset_us, anchor.source)
        if anchor.source == "server":
            wall_offset = self.clock.wall_us() - self.clock.mono_us()
            log.warning(
                "clock jump: this machine's clock is %+.1f s off the server's; readings are stamped by the "
                "server's time",
                (wall_offset - anchor.offset_us) / 1e6,
            )

    def _stamp(self, rows: list[Row]) -> tuple[list[dict[str, Any]], int, dict[int, tuple[str, str]]]:
        """The readings as the server takes them, how many times are estimates, and the readings
        whose time cannot be sent (outside the years the server takes)."""
        placed = placements(self.buffer.spans(), self.clock.boot())
        out = []
        estimated = 0
        bad: dict[int, tuple[str, str]] = {}
        for row in rows:
            if row.ts_us is not None:
                ts = row.ts_us
            else:
                offset, guess = placed.get(row.boot, (row.wall_us - row.mono_us, True))
                ts = row.mono_us + offset
                estimated += guess
            try:
                stamp = iso(ts)
            except (OverflowError, ValueError):
                bad[row.seq] = (
                    "invalid_timestamp",
                    f"{ts} µs since the epoch is not a time the server takes",
                )
                continue
            values = row.values
            if self.sensors is not None and not self.sensors.issuperset(values):
                self._ignore(set(values) - self.sensors)
                values = {k: v for k, v in values.items() if k in self.sensors}
            out.append({"machine_id": self.config.machine_id, "ts": stamp, "seq": row.seq, "values": values})
        return out, estimated, bad

    def _ignore(self, names: set[str]) -> None:
        new = names - self._ignored
        if new:
            self._ignored |= new
            log.warning(
                "the machine type has no sensor named %s: those values are not sent", ", ".join(sorted(new))
            )
            self.buffer.put(ignored_fields=",".join(sorted(self._ignored)))

    def now_us(self) -> int:
        """True time by the current boot's offset (the wall clock until the server has told us)."""
        offset = self.buffer.offset(self.clock.boot())
        return self.clock.mono_us() + offset if offset is not None else self.clock.wall_us()

    def _sync_seq(self, last: int) -> None:
        """The server holds seqs up to ``last``: readings never sent must start above it."""
        attempted = int(self.buffer.get("attempted_upto", -1))
        waiting = self.buffer.oldest(1)
        first = waiting[0].seq if waiting else int(self.buffer.get("next_seq", 0) or 0)
        if first > attempted and last >= first:
            self.buffer.renumber(attempted, last + 1)
        elif not waiting and last >= int(self.buffer.get("next_seq", 0) or 0):
            self.buffer.put(next_seq=last + 1)

    # -- edge scoring ------------------------------------------------------------------------------
    def _start_edge(self) -> None:
        try:
            _edge()
        except ImportError:
            log.info("edge scoring is not available in this build")
            return
        thread = threading.Thread(
            target=self._guard(self._model_loop), name="pitstop-agent-model", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _model_loop(self) -> None:
        """Fetch (or load from the cache) the champion, then refresh it now and then."""
        edge = _edge()
        cache = self.config.folder / "model"
        while not self._stop.is_set():
            try:
                model = edge.fetch_model(self.link.client, cache)
            except Exception as exc:  # a model problem never stops the agent's main work
                log.warning("edge model: %s", exc)
                model = None
            if model is not None:
                self._adopt(edge, model)
            self._stop.wait(
                self.config.model_refresh_s if model is not None else min(60.0, self.config.model_refresh_s)
            )

    def _adopt(self, edge: Any, model: Any) -> None:
        with self._edge_lock:
            current = self.edge
            if current is not None and current.version == model.version:
                if model.episode_start_us is not None:  # maintenance the server recorded since
                    current.reset(model.episode_start_us)
                return
            # a new version keeps the features so far (a state for another feature spec is dropped)
            state = self.buffer.get("edge_state") if current is None else current.snapshot()
            self.edge = edge.EdgeScorer(model, self.config.machine_id, state=state)
        self.buffer.put(model_version=str(model.version))
        log.info("edge scoring with model version %s", model.version)

    def _observe(self, seqs: list[int], incoming: list[Incoming]) -> None:
        scorer = self.edge
        if scorer is None:
            return
        now = self.now_us()
        mono = self.clock.mono_us()
        rows = [
            (s, r.ts_us if r.ts_us is not None else now - (mono - r.mono_us), r.values)
            for s, r in zip(seqs, incoming, strict=True)
        ]
        online = self._link_state == "up"
        with self._edge_lock:
            alerts = scorer.observe(rows, online=online)
            state = scorer.snapshot()
        self.buffer.put(edge_state=state)
        edge = _edge()
        for alert in alerts:
            edge.raise_alert(alert, self.config.alert_hook or None)
            self.buffer.put(last_alert=str(alert.to_dict()))

    # -- for tests and status ------------------------------------------------------------------------
    def wait_drained(self, timeout: float) -> bool:
        """Until the source has nothing more and the buffer is empty (True), or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._idle.is_set() and self.buffer.depth == 0:
                return True
            if self._stop.wait(0.05):
                break
        return self.buffer.depth == 0


def _edge() -> Any:
    """The edge-scoring module (imported when first used: it brings numpy's model code)."""
    return import_module("pitstop.agent.edge")
