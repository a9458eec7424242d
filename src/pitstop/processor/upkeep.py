"""Lake upkeep beside the processor: its own thread, so a compaction never stalls a micro-batch."""

from __future__ import annotations

import logging
import threading

from pitstop.errors import PitstopError, first_line
from pitstop.lake.upkeep import LakeUpkeep, UpkeepReport

log = logging.getLogger(__name__)


class UpkeepThread:
    """Runs ``upkeep`` every ``every_s`` seconds (0: never) until stopped. ``start`` first sets the
    tables' upkeep properties, before the processor appends (a metadata commit would fail a
    concurrent append), even when the schedule is off: writers must not clean the log on their own."""

    def __init__(self, upkeep: LakeUpkeep, every_s: float) -> None:
        self.upkeep = upkeep
        self.every_s = every_s
        self.last: UpkeepReport | None = None
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.upkeep.protect()
        except PitstopError as exc:
            log.warning("lake upkeep: table properties not set (%s); set on the next run", exc.message)
        except OSError as exc:  # a full or read-only disk: the processor starts anyway and retries
            log.warning("lake upkeep: table properties not set (%s); set on the next run", first_line(exc))
        if self.every_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pitstop-lake-upkeep", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the run in progress, if any (a run cut short commits nothing half-done)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.last = self.upkeep.run_once()
            except Exception:  # keep the thread alive; the next run starts over
                log.exception("lake upkeep failed; tried again in %.0f s", self.every_s)
                continue
            self.runs += 1
            log.info("%s", self.last.summary())
