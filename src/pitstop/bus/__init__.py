"""Durable ordered log of reading batches, with named consumer positions."""

from pitstop.bus.base import Bus, Message
from pitstop.bus.sqlite import SqliteBus

__all__ = ["Bus", "Message", "SqliteBus"]
