"""``stdin`` (NDJSON) or ``stdin:csv``: readings piped in by another program, one per line.

A pipe cannot be re-read, so a line is taken once it is buffered; what the other program wrote
but the agent had not read when it was killed is the only thing a restart can miss.
"""

from __future__ import annotations

import os
import select
import sys
import time
from typing import IO

from pitstop.agent.sources.base import Chunk
from pitstop.agent.sources.parse import CsvLines, parse_lines


class StdinSource:
    def __init__(self, fmt: str = "ndjson", stream: IO[bytes] | None = None) -> None:
        self.fmt = fmt
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._csv = CsvLines()
        self._pending = b""
        self.ended = False

    def open(self, position: str | None) -> None:
        pass

    def read(self, timeout: float) -> Chunk | None:
        if self.ended:
            time.sleep(timeout)
            return None
        fd = self._stream.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(fd, 1 << 16)
        if not data:
            self.ended = True
            data = b"\n" if self._pending else b""
        self._pending += data
        end = self._pending.rfind(b"\n")
        if end < 0:
            return None
        lines, self._pending = self._pending[: end + 1], self._pending[end + 1 :]
        readings, errors = parse_lines(lines, self._csv if self.fmt == "csv" else None, "stdin")
        return Chunk(readings, None, errors)

    def ack(self, position: str | None) -> None:
        pass

    def close(self) -> None:
        pass
