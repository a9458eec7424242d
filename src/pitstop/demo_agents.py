"""The harvester demo's live fleet through edge agents, with coverage gaps.

Each live harvester gets its own in-process ``Agent`` (``pitstop.agent``) with its folder under
``<data_dir>/agents/<machine_id>``: the agent reads the machine's recorded readings from a
``FeedSource`` (its recorded values and timestamps, advancing ``speed`` readings per second as the
old replay did), buffers them durably and forwards them over HTTP. Between agent and server sits a
``GapTransport``: during each machine's scheduled coverage gaps (seeded; tens of seconds every few
minutes, different per machine) every request fails to connect, as a harvester's cellular link
does in the rows, so the buffers fill and drain while the dashboard runs.

Resuming after a restart: the agent's buffer keeps what it had not sent and the source position
(the count of readings taken), so a new run continues where the last one stopped.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pitstop.agent.buffer import open_readonly
from pitstop.agent.link import Link
from pitstop.agent.runner import Agent, AgentConfig
from pitstop.agent.sources import Chunk, SourceReading
from pitstop.sim import MachineFeed

AGENTS_DIR = "agents"
CHUNK_MAX = 1000


class FeedSource:
    """A machine's recorded readings as an agent source: ``speed`` readings per second from
    ``open``, each with its recorded timestamp (or none: the agent stamps it). The position is the
    count of readings taken."""

    def __init__(self, feed: MachineFeed, *, speed: float, start: int = 0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive (readings per second)")
        self.feed = feed
        self.speed = speed
        self.start = start  # where to begin when the agent has no position yet
        self.taken = 0  # readings read
        self.acked = 0  # readings the agent holds (buffered or sent)
        self._opened = 0.0
        self._from = 0
        self._burst = 0

    def open(self, position: str | None) -> None:
        self.taken = min(len(self.feed.values), int(position) if position else self.start)
        self._from = self.acked = self.taken
        self._opened = time.monotonic()
        self._burst = self.feed.head_start if self._from == 0 else 0  # the head start, on a first run

    @property
    def done(self) -> bool:
        """Every reading is in the agent's hands."""
        return self.acked >= len(self.feed.values)

    def read(self, timeout: float) -> Chunk | None:
        if self.taken >= len(self.feed.values):
            time.sleep(timeout)
            return None
        if self._due() - self.taken < CHUNK_MAX:  # a chunk per ``timeout`` at most, as a logger writes
            time.sleep(timeout)
        upto = min(len(self.feed.values), self._due(), self.taken + CHUNK_MAX)
        if upto <= self.taken:
            return None
        stamps = self.feed.stamps
        readings = [
            SourceReading(
                dict(self.feed.values[i]),
                int(stamps[i].timestamp() * 1_000_000) if stamps is not None else None,
            )
            for i in range(self.taken, upto)
        ]
        self.taken = upto
        return Chunk(readings, str(upto))

    def _due(self) -> int:
        return self._from + self._burst + int((time.monotonic() - self._opened) * self.speed)

    def ack(self, position: str | None) -> None:
        if position is not None:
            self.acked = int(position)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class GapPlan:
    """When each machine loses coverage: a gap of ``min_s``..``max_s`` seconds every
    ``every_s`` seconds (each machine's own period within ±25 %), the first one after ``first_s``
    seconds at the earliest; seeded, so a run's gaps can be told again."""

    every_s: float = 180.0
    min_s: float = 15.0
    max_s: float = 45.0
    first_s: float = 30.0
    seed: int = 0

    def schedule(self, machine_id: str, horizon_s: float = 7 * 86_400.0) -> list[tuple[float, float]]:
        """The machine's gaps as (start, end) seconds from the fleet's start."""
        rng = random.Random(f"{self.seed}:{machine_id}")
        period = self.every_s * rng.uniform(0.75, 1.25)
        at = self.first_s + rng.uniform(0, period)
        gaps = []
        while at < horizon_s:
            length = rng.uniform(self.min_s, self.max_s)
            gaps.append((at, at + length))
            at += length + period * rng.uniform(0.5, 1.5)
        return gaps


class GapTransport(httpx.BaseTransport):
    """An HTTP transport that fails every request with ``ConnectError`` during the gaps."""

    def __init__(
        self,
        gaps: list[tuple[float, float]],
        *,
        inner: httpx.BaseTransport | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gaps = sorted(gaps)
        self._starts = [start for start, _ in self.gaps]
        self.inner = inner or httpx.HTTPTransport()
        self.now = now
        self.started = now()
        self.requests = 0
        self.failed = 0

    def gap_now(self) -> bool:
        t = self.now() - self.started
        i = bisect_right(self._starts, t) - 1
        return i >= 0 and t < self.gaps[i][1]

    def gaps_begun(self) -> int:
        return bisect_right(self._starts, self.now() - self.started)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.gap_now():
            self.failed += 1
            raise httpx.ConnectError("no coverage (a demo coverage gap)", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AgentFleet:
    """One agent per live machine, each behind its own gap schedule. ``stats.to_dict()`` is what
    the status route and the dashboard show (the keys of the old replay's, and the agents')."""

    def __init__(
        self,
        url: str,
        feeds: list[MachineFeed],
        folder: Path,
        *,
        speed: float,
        gaps: GapPlan | None = None,
        resume_from: dict[str, int] | None = None,
        send_interval_s: float = 1.0,
        retry_max_s: float = 10.0,
        edge_scoring: bool = False,
    ) -> None:
        self.url = url
        self.feeds = feeds
        self.folder = folder
        self.speed = speed
        self.plan = gaps
        self.resume_from = resume_from or {}
        self.send_interval_s = send_interval_s
        self.retry_max_s = retry_max_s
        self.edge_scoring = edge_scoring
        self.agents: list[Agent] = []
        self.sources: list[FeedSource] = []
        self.transports: list[GapTransport] = []
        self.stats = FleetStats(self)
        self._lock = threading.Lock()

    def remaining(self) -> int:
        """Readings not yet taken by the sources (from each agent's stored position; a feed rebuilt
        shorter than where its agent stopped has none left)."""
        return sum(max(0, len(f.values) - self._position(f)) for f in self.feeds)

    def _position(self, feed: MachineFeed) -> int:
        path = self.folder / feed.machine_id / "buffer.db"
        if path.exists():
            db = open_readonly(path)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'source_position'").fetchone()
            finally:
                db.close()
            if row is not None:
                return int(row[0])
        return self._start(feed)

    def _start(self, feed: MachineFeed) -> int:
        """A machine without an agent folder yet: after the seqs the server already holds."""
        last = self.resume_from.get(feed.machine_id)
        return min(len(feed.values), last + 1) if last is not None else 0

    def start(self) -> None:
        for feed in self.feeds:
            config = AgentConfig(
                server=self.url,
                token=feed.token,
                machine_id=feed.machine_id,
                source="feed",
                folder=self.folder / feed.machine_id,
                send_interval_s=self.send_interval_s,
                retry_max_s=self.retry_max_s,
                edge_scoring=self.edge_scoring,
            )
            source = FeedSource(feed, speed=self.speed, start=self._start(feed))
            transport = GapTransport(self.plan.schedule(feed.machine_id) if self.plan else [])
            link = Link(self.url, feed.token, transport=transport)
            agent = Agent(config, source=source, link=link)
            agent.start()
            with self._lock:
                self.agents.append(agent)
                self.sources.append(source)
                self.transports.append(transport)

    def stop(self) -> None:
        """Stop every agent (at once: each finishes the chunk its source is reading)."""
        stopping = [threading.Thread(target=agent.stop, daemon=True) for agent in list(self.agents)]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        with self._lock:
            self.stats.freeze()
            self.agents = []

    def buffered(self) -> int:
        """Readings in the agents' buffers, not delivered yet."""
        return sum(_buffer_counts(self.folder / f.machine_id)[0] for f in self.feeds)


def _buffer_counts(folder: Path) -> tuple[int, int, int, bool]:
    """An agent's buffer, read beside it (running or stopped): waiting, rejected, delivered, and
    whether it scores with a model (edge scoring)."""
    path = folder / "buffer.db"
    if not path.exists():
        return 0, 0, 0, False
    try:
        db = open_readonly(path)
        try:
            waiting = db.execute("SELECT count(*) FROM readings").fetchone()[0]
            rejected = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
            sent = db.execute("SELECT value FROM meta WHERE key = 'sent'").fetchone()
            model = db.execute("SELECT value FROM meta WHERE key = 'model_version'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:  # an agent creating its buffer right now
        return 0, 0, 0, False
    return int(waiting), int(rejected), int(sent[0]) if sent else 0, bool(model and model[0])


class FleetStats:
    """The fleet's figures, read live (kept as they were at ``stop``)."""

    def __init__(self, fleet: AgentFleet) -> None:
        self._fleet = fleet
        self._frozen: dict[str, Any] | None = None

    def freeze(self) -> None:
        self._frozen = self._read()

    def to_dict(self) -> dict[str, Any]:
        if self._frozen is not None:
            return dict(self._frozen)
        with self._fleet._lock:
            return self._read()

    def _read(self) -> dict[str, Any]:
        fleet = self._fleet
        accepted = 0
        buffered = 0
        rejected = 0
        scoring = 0
        for feed in fleet.feeds:
            waiting, refused, sent, model = _buffer_counts(fleet.folder / feed.machine_id)
            buffered += waiting
            rejected += refused
            accepted += sent
            scoring += model
        taken = sum(s.acked for s in fleet.sources)
        transports = fleet.transports
        return {  # sent: readings the agents took from their machines (all runs), accepted: delivered
            "sent": taken,
            "accepted": accepted,
            "requests": sum(t.requests for t in transports),
            "retries": sum(t.failed for t in transports),
            "rejected": {422: rejected} if rejected else {},
            "finished": bool(fleet.agents)
            and len(fleet.sources) == len(fleet.feeds)
            and all(s.done for s in fleet.sources)
            and buffered == 0,
            "agents": len(fleet.agents),
            "buffered": buffered,
            "offline": sum(1 for t in transports if t.gap_now()),
            "gaps": sum(t.gaps_begun() for t in transports),
            "edge_scoring": scoring,  # agents scoring with their type's champion (alerts while offline)
        }
