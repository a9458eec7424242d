"""A Pitstop agent source that reads sensor values off a CAN bus (an example plugin).

Each signal of the ``map`` option names a frame's arbitration id, a sensor, a scale and an offset,
and optionally where the raw value sits in the frame's data (start byte and length; default the
first two bytes): ``value = raw * scale + offset``. Signals are separated by commas::

    plugin:can?interface=socketcan&channel=can0&map=0x0CF00400:engine_rpm:0.125:0:3:2,0x18FEEE00:coolant_temp_c:1:-40:0:1

Options: ``interface`` and ``channel`` (python-can's, default socketcan on can0), ``map``,
``byteorder`` (little, J1939's, or big), ``signed`` (1: raw values are two's complement),
``period`` (seconds, default 1: one reading per period with the latest value of each sensor seen
in it; 0: one reading per frame), and any other option is passed to ``can.Bus`` (``bitrate=…``).

A bus cannot be read again, so the source has no position: what the agent buffered is safe, what
was on the wire while the agent was down is gone (as on any bus logger).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pitstop.agent.sources import Chunk, SourceError, SourceReading

MAX_FRAMES = 5000  # frames taken in one read at most


@dataclass(frozen=True)
class Signal:
    """One sensor's value in a frame: ``int(data[start:start+length]) * scale + offset``."""

    arbitration_id: int
    sensor: str
    scale: float = 1.0
    offset: float = 0.0
    start: int = 0
    length: int = 2

    def decode(self, data: bytes, byteorder: str, signed: bool) -> float | None:
        raw = data[self.start : self.start + self.length]
        if len(raw) < self.length:
            return None  # a short frame: no value for this sensor
        return int.from_bytes(raw, byteorder, signed=signed) * self.scale + self.offset  # type: ignore[arg-type]


def parse_map(text: str) -> dict[int, list[Signal]]:
    """``ID:sensor:scale:offset[:start:length]`` signals, comma-separated, by arbitration id."""
    signals: dict[int, list[Signal]] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        fields = item.split(":")
        if not 2 <= len(fields) <= 6:
            raise SourceError(f"CAN map entry {item!r}: use ID:sensor:scale:offset[:start:length]")
        try:
            ident = int(fields[0], 0)
            numbers = [float(f) for f in fields[2:4]]
            where = [int(f) for f in fields[4:6]]
        except ValueError as exc:
            raise SourceError(f"CAN map entry {item!r}: {exc}") from exc
        if not fields[1]:
            raise SourceError(f"CAN map entry {item!r} names no sensor")
        signal = Signal(ident, fields[1], *numbers, *where)  # type: ignore[arg-type]
        if signal.start < 0 or not 1 <= signal.length <= 8 or signal.start + signal.length > 64:
            raise SourceError(f"CAN map entry {item!r}: start and length must lie within a frame's data")
        signals.setdefault(ident, []).append(signal)
    if not signals:
        raise SourceError("the CAN source needs a map: map=ID:sensor:scale:offset[:start:length],…")
    return signals


class CanSource:
    """Frames from a python-can bus, decoded into sensor readings (the agent stamps their time)."""

    def __init__(
        self,
        machine_id: str,
        *,
        map: str = "",
        interface: str = "socketcan",
        channel: Any = "can0",
        byteorder: str = "little",
        signed: int = 0,
        period: float = 1.0,
        **bus_options: Any,
    ) -> None:
        if byteorder not in ("little", "big"):
            raise SourceError("CAN option byteorder must be little or big")
        if period < 0:
            raise SourceError("CAN option period must be 0 (a reading per frame) or more seconds")
        self.machine_id = machine_id
        self.signals = parse_map(map)
        self.interface, self.channel = interface, channel
        self.byteorder, self.signed, self.period = byteorder, bool(signed), float(period)
        self.bus_options = bus_options
        self.frames = 0  # frames decoded (with at least one mapped signal)
        self._bus: Any = None
        self._latest: dict[str, float] = {}
        self._window_end = 0.0

    def open(self, position: str | None) -> None:
        try:
            import can
        except ImportError as exc:
            raise SourceError("the CAN source needs python-can: pip install python-can") from exc
        try:
            self._bus = can.Bus(
                interface=self.interface,
                channel=self.channel,
                can_filters=[{"can_id": i, "can_mask": 0x1FFFFFFF} for i in self.signals],
                **self.bus_options,
            )
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise SourceError(f"cannot open CAN {self.interface} channel {self.channel}: {exc}") from exc
        self._window_end = time.monotonic() + self.period

    def read(self, timeout: float) -> Chunk | None:
        readings: list[SourceReading] = []
        wait = timeout if self.period == 0 else max(0.0, min(timeout, self._window_end - time.monotonic()))
        message = self._bus.recv(wait)
        taken = 0
        while message is not None and taken < MAX_FRAMES:
            taken += 1
            values = self._decode(message)
            if values and self.period == 0:
                readings.append(SourceReading(values))
            elif values:
                self._latest.update(values)
            message = self._bus.recv(0)
        if self.period > 0 and time.monotonic() >= self._window_end:
            if self._latest:
                readings.append(SourceReading(dict(self._latest)))
                self._latest = {}
            self._window_end = time.monotonic() + self.period
        return Chunk(readings) if readings else None

    def _decode(self, message: Any) -> dict[str, float]:
        if message.is_error_frame or message.is_remote_frame:
            return {}
        values = {}
        for signal in self.signals.get(message.arbitration_id, ()):
            value = signal.decode(bytes(message.data), self.byteorder, self.signed)
            if value is not None:
                values[signal.sensor] = value
        if values:
            self.frames += 1
        return values

    def ack(self, position: str | None) -> None:
        pass  # a bus keeps nothing to acknowledge

    def close(self) -> None:
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None
