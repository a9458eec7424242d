"""The harvester simulator, live: each machine advances reading by reading (numpy only, so the
device agent's ``sim:harvester`` source runs without the server's libraries). The physics are those
of ``pitstop.sim.harvester.simulate``."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pitstop.sim._harvester_machine import Event, _Machine, _run
from pitstop.sim._harvester_physics import SENSORS, Floats, _Orchard, _weather


class LiveHarvesters:
    """A live fleet for the demo: each call advances every machine by its next readings (one
    reading is ~10 simulated minutes; nights and repairs are jumps in ``ts``). The physics are
    those of ``simulate``, run a week at a time per machine; each machine keeps its own clock."""

    def __init__(
        self,
        machines: int,
        *,
        seed: int,
        start: datetime,
        prefix: str = "H-",
        chunk_days: int = 7,
        first: int = 0,
    ):
        """``machines`` harvesters numbered from ``first`` (a machine is the same whichever others
        are simulated beside it: one device's agent simulates only its own)."""
        self._seed, self._chunk = seed, chunk_days
        self._orchard = _Orchard.build(seed)
        self._fleet = [_Machine.new(seed, i, prefix) for i in range(first, first + machines)]
        self._cursor = [_hours(start)] * machines
        self._pending: list[list[tuple[float, Floats]]] = [[] for _ in range(machines)]
        self._events: list[list[Event]] = [[] for _ in range(machines)]
        self._latest = [-math.inf] * machines

    @property
    def machine_ids(self) -> list[str]:
        return [m.machine_id for m in self._fleet]

    def next_readings(self, n_per_machine: int = 1) -> list[dict[str, Any]]:
        """``{"machine_id", "ts", "seq", "values"}`` per reading, machine by machine; optional
        sensors that did not report are left out of ``values``."""
        out = []
        for i, m in enumerate(self._fleet):
            for _ in range(n_per_machine):
                while not self._pending[i]:
                    self._advance(i)
                t, row = self._pending[i].pop()
                values = {s: float(v) for s, v in zip(SENSORS, row, strict=True) if not math.isnan(v)}
                out.append({"machine_id": m.machine_id, "ts": _datetime(t), "seq": m.seq, "values": values})
                m.seq += 1
                self._latest[i] = t
        return out

    def next_events(self) -> list[dict[str, Any]]:
        """Events that happened by each machine's latest reading, each returned once."""
        out = []
        for i, m in enumerate(self._fleet):
            due = sorted(e for e in self._events[i] if e[0] <= self._latest[i])
            self._events[i] = [e for e in self._events[i] if e[0] > self._latest[i]]
            for t, kind, component, detail in due:
                out.append(
                    {
                        "machine_id": m.machine_id,
                        "ts": _datetime(t),
                        "kind": kind,
                        "component": component,
                        "detail": detail,
                    }
                )
        return out

    def _advance(self, i: int) -> None:
        for _ in range(400):  # a machine parked for the off-season reports nothing for months
            t_lo = self._cursor[i]
            first = math.floor(t_lo / 24)
            days = np.arange(first, first + self._chunk, dtype=np.int64)
            t_hi = float(days[-1] + 1) * 24
            t, values, events = _run(
                self._fleet[i], self._orchard, days, _weather(self._seed, days), t_lo, t_hi
            )
            self._cursor[i] = t_hi
            self._events[i].extend(events)
            if len(t):
                self._pending[i] = list(zip(t[::-1], values[::-1], strict=True))
                return
        raise RuntimeError(f"{self._fleet[i].machine_id} produced no readings in {400 * self._chunk} days")


def _hours(when: datetime) -> float:
    """Hours since the Unix epoch (a naive datetime is taken as UTC)."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() / 3600


def _datetime(hours: float) -> datetime:
    return datetime.fromtimestamp(round(hours * 3600), UTC)
