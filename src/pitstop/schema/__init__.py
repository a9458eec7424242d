"""Fleet schema: machine types, sensors, units, valid ranges; the reading and event models."""

from pitstop.schema.fleet import TURBOFAN, FleetSchema, MachineType, Sensor, default_fleet
from pitstop.schema.readings import EVENT_KINDS, Reading, parse_readings
from pitstop.schema.wire import WireReading, decode_batch, encode_batch

__all__ = [
    "EVENT_KINDS",
    "TURBOFAN",
    "FleetSchema",
    "MachineType",
    "Reading",
    "Sensor",
    "WireReading",
    "decode_batch",
    "default_fleet",
    "encode_batch",
    "parse_readings",
]
