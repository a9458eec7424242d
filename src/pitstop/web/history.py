"""A machine's telemetry as the dashboard reads it: once per lake version.

A machine page asks for the same machine's history twice at once (its sensor charts and the
explanation of its current score), and again on every poll. Reading the table costs tens of
milliseconds (every file of the table is opened: files hold many machines), so the frame is kept
for the table version it was read at; a new commit makes the next call read again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import polars as pl

from pitstop.lake import Lake


class MachineHistory:
    def __init__(self, lake: Lake, size: int = 32) -> None:
        self.lake = lake
        self.size = size
        self._lock = threading.Lock()
        self._frames: OrderedDict[tuple[str, int], pl.DataFrame] = OrderedDict()

    def get(self, machine_id: str) -> pl.DataFrame:
        """Every telemetry column of ``machine_id``'s readings at the table's current version."""
        key = (machine_id, self.lake.version("telemetry"))
        with self._lock:
            frame = self._frames.get(key)
            if frame is not None:
                self._frames.move_to_end(key)
                return frame
        frame = self.lake.read("telemetry", version=key[1], machine_ids=[machine_id])
        with self._lock:
            self._frames[key] = frame
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)
        return frame
