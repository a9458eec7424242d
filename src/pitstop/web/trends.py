"""Each machine's recent predicted RULs (the fleet page's sparklines), kept up to date in memory.

The first call reads each machine's last ``keep`` predictions (an index seek per machine); later
calls read only the rows added since (``id`` above the last one seen), so a fleet page polled
every few seconds costs the new predictions, not the whole table. A table that shrank (restored
from a backup) is read again from scratch.
"""

from __future__ import annotations

import threading
from collections import deque

from sqlalchemy import func, select

from pitstop.store import Database, Machine, Prediction


class Trends:
    def __init__(self, db: Database, keep: int = 100) -> None:
        self.db = db
        self.keep = keep
        self._lock = threading.Lock()
        self._last_id: int | None = None
        self._by_machine: dict[str, deque[float]] = {}

    def get(self, points: int) -> dict[str, list[float]]:
        """Every machine's last ``points`` (at most ``keep``) predicted RULs, oldest first."""
        if points <= 0:
            return {}
        with self._lock:
            self._refresh()
            return {m: list(d)[-points:] for m, d in self._by_machine.items()}

    def _refresh(self) -> None:
        with self.db.session() as s:
            newest = s.scalar(select(func.max(Prediction.id))) or 0
            if self._last_id is None or newest < self._last_id:
                recent = (
                    select(Prediction.id)
                    .where(Prediction.machine_id == Machine.machine_id)
                    .order_by(Prediction.id.desc())
                    .limit(self.keep)
                    .correlate(Machine)
                    .scalar_subquery()
                )
                query = (
                    select(Prediction.id, Prediction.machine_id, Prediction.rul)
                    .select_from(Machine)
                    .join(Prediction, Prediction.id.in_(recent))
                    .order_by(Prediction.id)
                )
                self._by_machine = {}
            elif newest == self._last_id:
                return
            else:
                query = (
                    select(Prediction.id, Prediction.machine_id, Prediction.rul)
                    .where(Prediction.id > self._last_id)
                    .order_by(Prediction.id)
                )
            rows = s.execute(query).all()
        for row_id, machine_id, rul in rows:
            found = self._by_machine.get(machine_id)
            if found is None:
                found = self._by_machine[machine_id] = deque(maxlen=self.keep)
            found.append(round(rul, 2))
            newest = max(newest, row_id)
        self._last_id = newest
