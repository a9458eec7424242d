"""Fleet schema: machine types, sensors, units, valid ranges; the reading and event models."""

from pitstop.schema.fleet import TIME_UNITS, Component, FleetSchema, MachineType, Sensor, default_fleet
from pitstop.schema.fleetfile import FleetError, load_fleet_file, parse_fleet, shipped_fleet
from pitstop.schema.readings import EVENT_KINDS, Reading
from pitstop.schema.wire import batch_schema, batch_table, decode_table, encode_readings, encode_table

# The shipped turbofan type (C-MAPSS), read from its fleet file like any other.
TURBOFAN = default_fleet().type_of("turbofan")

__all__ = [
    "EVENT_KINDS",
    "TIME_UNITS",
    "TURBOFAN",
    "Component",
    "FleetError",
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
    "load_fleet_file",
    "parse_fleet",
    "shipped_fleet",
]
