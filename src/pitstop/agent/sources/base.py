"""What a source is: something the agent reads readings from, and tells when they are safe.

A source hands over ``Chunk``s: readings (sensor values, and a timestamp when the source has its
own clock) and the position after them. The agent commits the readings and the position to its
buffer in one transaction, then calls ``ack(position)``: a source that can (a file, an MQTT QoS 1
subscription) is told only then that the readings are safe, so a crash in between reads them again
and the buffer never holds them twice (the position is committed with them).

Plugins for real buses (CAN, Modbus …) implement this protocol and are found through the
``pitstop.agent_sources`` entry-point group (README "Edge agent", example in examples/can_source).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pitstop.errors import AgentError


@dataclass(frozen=True)
class SourceReading:
    values: dict[str, float]
    ts_us: int | None = None  # the source's own time; None: the agent stamps it


@dataclass(frozen=True)
class Chunk:
    readings: list[SourceReading]
    position: str | None = None  # where to resume after these (committed with them)
    errors: list[str] = field(default_factory=list)  # lines or messages that were not readings


@runtime_checkable
class Source(Protocol):
    """Readings in; the agent drives it from one thread."""

    def open(self, position: str | None) -> None:
        """Start reading after ``position`` (None: from the source's beginning or now)."""

    def read(self, timeout: float) -> Chunk | None:
        """The readings available within ``timeout`` seconds (None or an empty chunk: none yet)."""

    def ack(self, position: str | None) -> None:
        """Everything up to ``position`` is durably buffered."""

    def close(self) -> None: ...


class SourceError(AgentError):
    """A source that cannot work (a missing file, a bad option); the agent reports it and stops."""

    code = "agent_source"


def clean_values(raw: Any) -> dict[str, float]:
    """Sensor values as finite floats; anything else (null, text, NaN) is left out as missing."""
    if not isinstance(raw, dict):
        raise ValueError("values must be an object of sensor -> number")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            continue
        if math.isfinite(number):
            out[str(key)] = number
    return out
