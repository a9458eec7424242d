"""Fleet schema: machine types, sensors, units, valid ranges; the reading and event models."""

from pitstop.schema.fleet import TURBOFAN, FleetSchema, MachineType, Sensor, default_fleet
from pitstop.schema.readings import EVENT_KINDS, Reading
from pitstop.schema.wire import batch_schema, batch_table, decode_table, encode_readings, encode_table

__all__ = [
    "EVENT_KINDS",
    "TURBOFAN",
    "FleetSchema",
    "MachineType",
    "Reading",
    "Sensor",
    "batch_schema",
    "batch_table",
    "decode_table",
    "default_fleet",
    "encode_readings",
    "encode_table",
]
