"""``tail:PATH``: a CSV or NDJSON file another program appends to (a data logger's output).

The position is the file's inode and the byte offset after the last whole line taken, committed with
the readings: a restart resumes at that line, a half-written last line waits for its newline, a
file rotated away is read to its end before the new one is followed from its start, and a file
truncated in place is followed from its start again (logged).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO

from pitstop.agent.sources.base import Chunk, SourceError
from pitstop.agent.sources.parse import CsvLines, parse_lines

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 1 << 20


class TailSource:
    def __init__(self, path: str | Path, fmt: str | None = None, poll_s: float = 0.05) -> None:
        self.path = Path(path)
        fmt = fmt or ("csv" if self.path.suffix.lower() in (".csv", ".txt") else "ndjson")
        if fmt not in ("csv", "ndjson"):
            raise SourceError(f"tail format {fmt!r}: use csv or ndjson")
        self.fmt = fmt
        self.poll_s = poll_s
        self._fh: IO[bytes] | None = None
        self._inode = 0
        self._offset = 0
        self._csv = CsvLines()

    def open(self, position: str | None) -> None:
        if position:
            state = json.loads(position)
            self._inode, self._offset = int(state["inode"]), int(state["offset"])
            self._csv = CsvLines(state.get("header"))
        self._reopen(resume=bool(position))

    def _reopen(self, resume: bool) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open across reads, closed in close()
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        if resume and st.st_ino == self._inode and st.st_size >= self._offset:
            fh.seek(self._offset)
        else:
            if resume:
                log.warning("%s was replaced or truncated: following it from its start", self.path)
                self._csv = CsvLines()
            self._offset = 0
        if self._fh is not None:
            self._fh.close()
        self._fh, self._inode = fh, st.st_ino
        return True

    def read(self, timeout: float) -> Chunk | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._fh is None and not self._reopen(resume=False):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(self.poll_s)
                continue
            chunk = self._take()
            if chunk is not None:
                return chunk
            if self._rotated():
                continue
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.poll_s)

    def _take(self) -> Chunk | None:
        assert self._fh is not None
        self._fh.seek(self._offset)
        data = self._fh.read(MAX_CHUNK_BYTES)
        end = data.rfind(b"\n")
        if end < 0:
            return None
        readings, errors = parse_lines(
            data[: end + 1], self._csv if self.fmt == "csv" else None, self.path.name
        )
        self._offset += end + 1
        return Chunk(readings, self.position(), errors)

    def _rotated(self) -> bool:
        """The path now names another file (rotation): follow it once the old one is read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if st.st_ino != self._inode:
            return self._reopen(resume=False)
        if st.st_size < self._offset:  # truncated in place
            log.warning("%s was truncated: following it from its start", self.path)
            self._offset = 0
            self._csv = CsvLines()
            return True
        return False

    def position(self) -> str:
        return json.dumps({"inode": self._inode, "offset": self._offset, "header": _header(self._csv)})

    def ack(self, position: str | None) -> None:
        pass  # the position is the acknowledgement: committed with the readings

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _header(csv: CsvLines) -> str | None:
    return ",".join(csv.columns) if csv.columns else None
