"""The agent's clocks, and their correction from the server's ``Date`` header.

A small box without a real-time clock boots at some fixed date until it reaches a time server, and
a wall clock can jump when it finally does. So every reading keeps three things: the boot it was
read in (Linux's ``boot_id``), the monotonic clock of that boot (which never jumps) and the wall
clock. Its time is worked out when it is sent:

- A boot gets an **offset** (true time = monotonic + offset) from the first server answer in it: the
  wall clock's own offset when it agrees with the server's ``Date`` within ``tolerance_s``, else the
  server's (a clock jump: logged, and counted as ``clock_corrections``). Later answers re-anchor
  it only when it has drifted past the tolerance, so times never wobble with ``Date``'s whole seconds.
- Readings of the current boot are stamped through its offset, also those read before the offset
  was known: the monotonic clock tells how long before.
- A boot that ended before any answer came (the box rebooted in a dead zone) has no offset. Its
  readings keep their wall clock when that fits between the times known before and after it;
  otherwise they are placed to end just before the next boot began, keeping their spacing
  (``clock_estimated``).

The server's own checks still hold: a reading too far in the future is refused there, and the
agent keeps it in its ``rejected`` table.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# no reading of a Pitstop agent is older than this: a wall clock before it has not been set
PLAUSIBLE_US = 1_735_689_600_000_000  # 2025-01-01


class Clock(Protocol):
    """Where the agent reads time; tests pass a simulated one."""

    def wall_us(self) -> int: ...

    def mono_us(self) -> int: ...

    def boot(self) -> str: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clocks: ``time.time``, ``time.monotonic`` (CLOCK_MONOTONIC: since boot, never
    stepped) and the kernel's boot id."""

    def __init__(self) -> None:
        try:
            self._boot = _BOOT_ID.read_text().strip()
        except OSError:  # not Linux: the moment of boot, as the clocks tell it, to the minute
            self._boot = hashlib.sha256(
                str(round((time.time() - time.monotonic()) / 60)).encode()
            ).hexdigest()[:32]

    def wall_us(self) -> int:
        return time.time_ns() // 1000

    def mono_us(self) -> int:
        return time.monotonic_ns() // 1000

    def boot(self) -> str:
        return self._boot

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def server_time_us(date_header: str | None) -> int | None:
    """An HTTP ``Date`` header as µs since the epoch (its middle second), or None if absent or bad."""
    if not date_header:
        return None
    try:
        when = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e6) + 500_000  # Date truncates to the second


@dataclass(frozen=True)
class Anchor:
    """One boot's clock: true time = mono + offset_us."""

    boot: str
    offset_us: int
    source: str  # "local" or "server"


def judge(
    boot: str,
    sent_mono: int,
    got_mono: int,
    wall_at_got: int,
    server_us: int,
    tolerance_s: float,
    current: int | None,
) -> Anchor | None:
    """The offset a server answer gives the boot (None: keep ``current``).

    ``sent_mono``/``got_mono``: the monotonic clock when the request left and the answer came;
    ``server_us``: the server's time from ``Date`` (taken as the round trip's middle)."""
    mid_mono = (sent_mono + got_mono) // 2
    tolerance = int(tolerance_s * 1e6) + (got_mono - sent_mono) // 2
    server_offset = server_us - mid_mono
    if current is not None and abs(current - server_offset) <= tolerance:
        return None  # still within tolerance: keep the offset, times stay steady
    wall_offset = wall_at_got - got_mono
    if abs(wall_offset - server_offset) <= tolerance:
        return Anchor(boot, wall_offset, "local")
    return Anchor(boot, server_offset, "server")


def iso(us: int) -> str:
    """µs since the epoch as RFC 3339 with a Z (exact: integer arithmetic)."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class BootSpan:
    """What the buffer holds of one boot: its offset (if known) and its readings' clock ranges."""

    boot: str
    offset_us: int | None
    mono: tuple[int, int]  # first and last monotonic µs buffered
    wall: tuple[int, int]  # first and last wall µs buffered


def placements(
    spans: list[BootSpan], current: str, floor_us: int = PLAUSIBLE_US
) -> dict[str, tuple[int, bool]]:
    """For each boot (oldest first), the offset that turns its monotonic clock into true time, and
    whether it is an estimate. A boot without an offset of its own keeps its wall clock when that
    fits between its neighbours' known times (and after ``floor_us``: a clock reading 1970 is a box
    without a real-time clock), else it ends 1 s before the next known boot began."""
    out: dict[str, tuple[int, bool]] = {}
    before: int | None = floor_us  # the true time of the last reading placed so far
    for i, span in enumerate(spans):
        if span.offset_us is not None:
            out[span.boot] = (span.offset_us, False)
        else:
            wall_offset = span.wall[1] - span.mono[1]
            after = next((s.offset_us for s in spans[i + 1 :] if s.offset_us is not None), None)
            fits = (before is None or span.wall[0] > before) and (after is None or span.wall[1] < after)
            if span.boot == current or fits or after is None:
                out[span.boot] = (wall_offset, span.boot != current and not fits)
            else:  # end 1 s before the next known boot began (its monotonic 0)
                out[span.boot] = (after - 1_000_000 - span.mono[1], True)
        before = span.mono[1] + out[span.boot][0]
    return out
