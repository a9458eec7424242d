"""Intake of readings: device authentication, strict validation, durable hand-off to the bus."""

from pitstop.ingest.devices import DeviceIdentity, DeviceRegistry, hash_token, new_token
from pitstop.ingest.intake import Intake, IntakeResult
from pitstop.ingest.routes import router

__all__ = ["DeviceIdentity", "DeviceRegistry", "Intake", "IntakeResult", "hash_token", "new_token", "router"]
