from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

log = logging.getLogger(__name__)


@dataclass
class MachineFeed:
    """One machine's recorded readings (seq-ordered) and the device token it posts with."""

    machine_id: str
    token: str
    seqs: list[int]
    values: list[dict[str, float]]
    next_index: int = 0
    # readings sent at once when the replay starts (ts spaced back from now): the machine joins
    # the live fleet part-way through its history
    head_start: int = 0
    stamps: list[datetime] | None = None  # recorded timestamps; None: stamped now at sending

    @property
    def done(self) -> bool:
        return self.next_index >= len(self.seqs)


@dataclass
class ReplayStats:
    sent: int = 0
    accepted: int = 0
    requests: int = 0
    retries: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "requests": self.requests,
            "retries": self.retries,
            "rejected": dict(self.rejected),
            "finished": self.finished,
        }


class Replay:
    """Replays recorded machines as a live fleet: each machine posts its next readings every
    ``tick`` seconds so that it advances ``speed`` readings per second, with ``ts`` = now (or the
    feed's recorded ``stamps``, all in the past, for a fleet simulated up to now).

    Batches that fail to arrive (connection error, 5xx, 429) are retried with backoff; the server
    stores a re-sent reading once, so retries are safe. Rejected batches (4xx) are counted, not retried.
    """

    def __init__(
        self,
        base_url: str,
        feeds: list[MachineFeed],
        *,
        speed: float,
        tick: float = 0.5,
        max_retries: int = 8,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive (readings per second per machine)")
        self.base_url = base_url.rstrip("/")
        self.feeds = feeds
        self.speed = speed
        self.tick = tick
        self.max_retries = max_retries
        self.stats = ReplayStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def skip_to(self, last_seq: dict[str, int]) -> None:
        """Resume: start each machine after the last seq the server already holds."""
        for feed in self.feeds:
            seen = last_seq.get(feed.machine_id)
            if seen is not None:
                feed.next_index = sum(1 for s in feed.seqs if s <= seen)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="pitstop-replay", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def run(self) -> ReplayStats:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30.0, limits=limits) as client:
            started = time.monotonic()
            offsets = {f.machine_id: f.next_index + f.head_start for f in self.feeds}
            while not self._stop.is_set():
                active = [f for f in self.feeds if not f.done]
                if not active:
                    self.stats.finished = True
                    break
                due = int((time.monotonic() - started) * self.speed)
                posts = []
                for feed in active:
                    upto = min(len(feed.seqs), offsets[feed.machine_id] + due)
                    if upto > feed.next_index:
                        posts.append(self._post(client, feed, feed.next_index, upto))
                        feed.next_index = upto
                if posts:
                    await asyncio.gather(*posts)
                await asyncio.sleep(self.tick)
        return self.stats

    async def _post(self, client: httpx.AsyncClient, feed: MachineFeed, start: int, stop: int) -> None:
        now = datetime.now(UTC)
        n = stop - start
        step = timedelta(seconds=1 / self.speed)
        body = [
            {
                "machine_id": feed.machine_id,
                "ts": (
                    feed.stamps[start + i] if feed.stamps is not None else now - step * (n - 1 - i)
                ).isoformat(),
                "seq": feed.seqs[start + i],
                "values": feed.values[start + i],
            }
            for i in range(n)
        ]
        headers = {"Authorization": f"Bearer {feed.token}"}
        self.stats.sent += n
        for attempt in range(self.max_retries + 1):
            try:
                self.stats.requests += 1
                response = await client.post("/api/v1/readings", json=body, headers=headers)
            except httpx.TransportError as exc:
                log.debug("replay post failed (%s), retrying", exc)
                status = None
            else:
                status = response.status_code
                if status == 202:
                    self.stats.accepted += n
                    return
                if status < 500 and status != 429:
                    self.stats.rejected[status] = self.stats.rejected.get(status, 0) + n
                    log.warning("batch for %s rejected: %s %s", feed.machine_id, status, response.text[:300])
                    return
            if attempt == self.max_retries or self._stop.is_set():
                break
            self.stats.retries += 1
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        if self._stop.is_set():  # the replay is stopping (the server may be gone already): by design
            log.debug("replay stopping: a batch of %d readings for %s not sent", n, feed.machine_id)
            return
        log.error("gave up on a batch of %d readings for %s (last status %s)", n, feed.machine_id, status)
