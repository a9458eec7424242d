"""``tail:PATH``: a CSV or NDJSON file another program appends to (a data logger's output).

The position is the file's inode, the byte offset after the last whole line taken, a fingerprint
of the file's first bytes and the CSV header, committed with the readings:

- a restart resumes at that line (also when the file appears only after the agent started);
- a half-written last line waits for its newline; a line longer than 1 MiB is skipped (counted);
- a file rotated away is read to its end before the new one is followed from its start, also
  across a restart (the rotated file is found beside it by its inode);
- a file truncated in place, or truncated and rewritten while the agent was down (the fingerprint
  changed), is followed from its start again (logged);
- each new file's first line is its CSV header.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

from pitstop.agent.sources.base import Chunk, SourceError
from pitstop.agent.sources.parse import CsvLines, parse_lines

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 1 << 20
_PRINT = 64  # bytes of the file's start that identify it


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
        self._print = ""
        self._csv = CsvLines()
        self._resume: dict[str, Any] | None = None  # a committed position not yet matched to a file

    def open(self, position: str | None) -> None:
        if position:
            state = json.loads(position)
            self._resume = state
            self._csv = CsvLines(state.get("header"))
            rotated = self._find_rotated(int(state["inode"]))
            if rotated is not None:  # the file we were reading was rotated while we were down
                self._follow(rotated, state)
                return
        self._open_path()

    def _find_rotated(self, inode: int) -> Path | None:
        try:
            if os.stat(self.path).st_ino == inode:
                return None
        except FileNotFoundError:
            pass
        for sibling in sorted(self.path.parent.glob(self.path.name + "*")):
            try:
                if sibling != self.path and os.stat(sibling).st_ino == inode:
                    log.info(
                        "%s was rotated to %s while the agent was down: reading it to its end",
                        self.path,
                        sibling,
                    )
                    return sibling
            except OSError:
                continue
        return None

    def _follow(self, path: Path, state: dict[str, Any]) -> None:
        fh = open(path, "rb")  # noqa: SIM115 - kept open across reads, closed in close()
        self._swap(fh)
        self._inode, self._offset, self._print = (
            int(state["inode"]),
            int(state["offset"]),
            state.get("print", ""),
        )
        self._resume = None

    def _open_path(self) -> bool:
        """Open the path: at the committed position if it is the same file, else from its start."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open across reads, closed in close()
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        state, self._resume = self._resume, None
        same = (
            state is not None
            and st.st_ino == int(state["inode"])
            and st.st_size >= int(state["offset"])
            and _matches(fh, str(state.get("print") or ""))
        )
        if same:
            assert state is not None
            self._offset, self._print = int(state["offset"]), _fingerprint(fh)
        else:
            if state is not None:
                log.warning("%s was replaced or truncated: following it from its start", self.path)
            self._offset, self._print = 0, _fingerprint(fh)
            self._csv = CsvLines()
        self._swap(fh)
        self._inode = st.st_ino
        return True

    def _swap(self, fh: IO[bytes]) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = fh

    def read(self, timeout: float) -> Chunk | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._fh is None and not self._open_path():
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
        if not self._print.endswith(f":{_PRINT}"):  # the file was shorter than the fingerprint
            self._print = _fingerprint(self._fh)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) < MAX_CHUNK_BYTES:
                return None  # a line still being written
            return self._skip_long_line()
        csv = self._csv if self.fmt == "csv" else None
        readings, errors = parse_lines(data[: end + 1], csv, self.path.name)
        self._offset += end + 1
        return Chunk(readings, self.position(), errors)

    def _skip_long_line(self) -> Chunk | None:
        """A line longer than MAX_CHUNK_BYTES: skip to the next newline, and say so."""
        assert self._fh is not None
        start = self._offset
        position = self._offset + MAX_CHUNK_BYTES
        self._fh.seek(position)
        while True:
            data = self._fh.read(MAX_CHUNK_BYTES)
            if not data:
                return None  # its end is not written yet
            end = data.find(b"\n")
            if end >= 0:
                self._offset = position + end + 1
                message = (
                    f"{self.path.name}: a line of {self._offset - start:,} bytes skipped (longer than 1 MiB)"
                )
                return Chunk([], self.position(), [message])
            position += len(data)

    def _rotated(self) -> bool:
        """The path now names another file (rotation): follow it once the old one is read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if st.st_ino != self._inode:
            self._resume = None
            return self._open_path()  # a new file: its own header, from its start
        if st.st_size < self._offset:  # truncated in place
            log.warning("%s was truncated: following it from its start", self.path)
            self._offset = 0
            self._print = ""
            self._csv = CsvLines()
            return True
        return False

    def position(self) -> str:
        header = ",".join(self._csv.columns) if self._csv.columns else None
        return json.dumps(
            {"inode": self._inode, "offset": self._offset, "print": self._print, "header": header}
        )

    def ack(self, position: str | None) -> None:
        pass  # the position is the acknowledgement: committed with the readings

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _fingerprint(fh: IO[bytes], size: int = _PRINT) -> str:
    """The sha256 of the file's first ``size`` bytes (or fewer, if it is shorter) and their count:
    another file at the same path and inode (truncated and rewritten) starts otherwise."""
    here = fh.tell()
    fh.seek(0)
    head = fh.read(size)
    fh.seek(here)
    return hashlib.sha256(head).hexdigest()[:16] + f":{len(head)}"


def _matches(fh: IO[bytes], fingerprint: str) -> bool:
    """Whether the file still starts with the bytes ``fingerprint`` was taken of (an old position
    without one matches)."""
    if ":" not in fingerprint:
        return True
    size = int(fingerprint.rpartition(":")[2])
    return _fingerprint(fh, size) == fingerprint
