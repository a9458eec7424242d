"""Intake of readings: device authentication, strict validation, durable hand-off to the bus."""

from pitstop.ingest.devices import DeviceRegistry, hash_token, new_token
from pitstop.ingest.routes import router

__all__ = ["DeviceRegistry", "hash_token", "new_token", "router"]
