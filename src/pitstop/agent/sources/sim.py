"""``sim:harvester``: the simulated orange harvester as a live source (the demo's, and a way to try
the agent without hardware).

Options (``sim:harvester?seed=0&index=2&rate=10&ts=agent``): the fleet ``seed`` and the machine's
``index`` (default: the number in the machine id, H-003 is index 2), ``rate`` readings per second
(0: as fast as the agent takes them), ``ts=agent`` to stamp readings when read (default) or
``ts=sim`` to keep the simulator's own times (~10 simulated minutes apart, from ``start``).
The position is the count of readings taken, so a restart continues with the next one.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from pitstop.agent.sources.base import Chunk, SourceError, SourceReading

DEFAULT_START = "2025-01-01"


class SimSource:
    def __init__(
        self,
        machine_id: str,
        *,
        kind: str = "harvester",
        seed: int = 0,
        index: int | None = None,
        rate: float = 10.0,
        ts: str = "agent",
        start: str = DEFAULT_START,
    ) -> None:
        if kind != "harvester":
            raise SourceError(f"unknown simulator {kind!r}: the agent simulates 'harvester'")
        if ts not in ("agent", "sim"):
            raise SourceError("sim option ts must be agent or sim")
        if rate < 0:
            raise SourceError("sim option rate must be 0 (as fast as taken) or more readings per second")
        if index is None:
            digits = re.findall(r"\d+", machine_id)
            index = max(0, int(digits[-1]) - 1) if digits else 0
        from pitstop.sim.live import LiveHarvesters

        when = datetime.fromisoformat(start)
        self._sim = LiveHarvesters(
            1, seed=seed, start=when if when.tzinfo else when.replace(tzinfo=UTC), first=index
        )
        self.rate = rate
        self.stamp_sim = ts == "sim"
        self.taken = 0
        self._next_due = time.monotonic()

    def open(self, position: str | None) -> None:
        skip = int(position) if position else 0
        while self.taken < skip:  # the simulator is deterministic: run it forward to where it was
            self._one()
        self._next_due = time.monotonic()

    def _one(self) -> SourceReading:
        row = self._sim.next_readings(1)[0]
        self.taken += 1
        ts = int(row["ts"].timestamp()) * 1_000_000 if self.stamp_sim else None
        return SourceReading(dict(row["values"]), ts)

    def read(self, timeout: float) -> Chunk | None:
        now = time.monotonic()
        if self.rate == 0:
            n = 500
        else:
            if now < self._next_due:
                time.sleep(min(timeout, self._next_due - now))
                now = time.monotonic()
            n = int((now - self._next_due) * self.rate) + 1 if now >= self._next_due else 0
            n = min(n, 1000)
            self._next_due += n / self.rate
        if n == 0:
            return None
        readings = [self._one() for _ in range(n)]
        return Chunk(readings, str(self.taken))

    def ack(self, position: str | None) -> None:
        pass

    def close(self) -> None:
        pass
