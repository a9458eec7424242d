"""The example CAN source plugin (examples/can_source) on python-can's in-process virtual bus: loaded
the way the agent loads plugins, it decodes mapped frames into sensor readings."""

from __future__ import annotations

import sys
import time
import tomllib
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from uuid import uuid4

import can
import pytest

from pitstop.agent.sources import ENTRY_POINTS, SourceError, open_source
from pitstop.agent.sources.base import Chunk, Source

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "can_source"
RPM = 0x0CF00400  # J1939 EEC1: engine speed in bytes 3-4, 0.125 rpm per bit
TEMP = 0x18FEEE00  # J1939 ET1: coolant temperature in byte 0, 1 °C per bit, -40 °C offset
MAP = f"{RPM:#x}:engine_rpm:0.125:0:3:2,{TEMP:#x}:coolant_temp_c:1:-40:0:1"


@pytest.fixture
def plugin_path() -> Iterator[None]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("pitstop_can_source", None)


def frames(bus: can.BusABC, rpm: float, temp_c: float) -> None:
    raw = int(rpm / 0.125).to_bytes(2, "little")
    bus.send(can.Message(arbitration_id=RPM, data=bytes([0, 0, 0]) + raw + bytes(3), is_extended_id=True))
    bus.send(can.Message(arbitration_id=TEMP, data=bytes([int(temp_c + 40)]) + bytes(7), is_extended_id=True))
    bus.send(can.Message(arbitration_id=0x123, data=bytes(8), is_extended_id=False))  # not mapped


def collect(source: Source, want: int, timeout: float = 5.0) -> list[dict[str, float]]:
    got: list[dict[str, float]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        chunk = source.read(0.2)
        if chunk is not None:
            assert isinstance(chunk, Chunk) and chunk.position is None
            got.extend(r.values for r in chunk.readings)
            assert all(r.ts_us is None for r in chunk.readings), "the agent stamps bus readings"
    return got


def test_the_can_plugin_decodes_mapped_frames_from_a_virtual_bus(plugin_path: None) -> None:
    channel = f"pitstop-{uuid4().hex[:8]}"
    spec = f"plugin:pitstop_can_source:CanSource?interface=virtual&channel={channel}&period=0&map={MAP}"
    source = open_source(spec, "HV-001")
    source.open(None)
    sender = can.Bus(interface="virtual", channel=channel)
    try:
        frames(sender, rpm=1850.0, temp_c=88.0)
        frames(sender, rpm=1900.5, temp_c=-5.0)
        got = collect(source, 4)
    finally:
        sender.shutdown()
        source.close()
    assert got == [
        {"engine_rpm": 1850.0},
        {"coolant_temp_c": 88.0},
        {"engine_rpm": 1900.5},
        {"coolant_temp_c": -5.0},
    ], "scale and offset applied, an unmapped id ignored"


def test_with_a_period_the_plugin_reads_the_latest_value_of_each_sensor(plugin_path: None) -> None:
    channel = f"pitstop-{uuid4().hex[:8]}"
    spec = f"plugin:pitstop_can_source:CanSource?interface=virtual&channel={channel}&period=0.3&map={MAP}"
    source = open_source(spec, "HV-001")
    source.open(None)
    sender = can.Bus(interface="virtual", channel=channel)
    try:
        frames(sender, rpm=1000.0, temp_c=70.0)
        frames(sender, rpm=1200.0, temp_c=71.0)
        got = collect(source, 1)
    finally:
        sender.shutdown()
        source.close()
    assert got == [{"engine_rpm": 1200.0, "coolant_temp_c": 71.0}]


def test_the_example_registers_its_source_as_the_can_entry_point(plugin_path: None) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    value = project["entry-points"][ENTRY_POINTS]["can"]
    cls = EntryPoint(name="can", value=value, group=ENTRY_POINTS).load()
    assert cls.__name__ == "CanSource"
    assert "python-can" in " ".join(project["dependencies"])


@pytest.mark.parametrize(
    "bad", ["", "0x100", "zz:rpm:1:0", "0x100:rpm:1:0:0:9", "0x100:rpm:1:0:60:8", "0x100::1:0"]
)
def test_a_bad_can_map_is_refused_with_the_format(plugin_path: None, bad: str) -> None:
    with pytest.raises(SourceError, match="map"):
        open_source(f"plugin:pitstop_can_source:CanSource?interface=virtual&map={bad}", "HV-001")
