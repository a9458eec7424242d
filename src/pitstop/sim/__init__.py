"""Fleet simulation: C-MAPSS data and a replay that speaks the ingest protocol.

Lazy: ``pitstop.sim.live`` (the harvester simulator, numpy only) is imported by the device agent,
which has no Polars.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitstop.sim.cmapss import read_cmapss, read_rul, shipped
    from pitstop.sim.replay import MachineFeed, Replay, ReplayStats

_WHERE = {
    "read_cmapss": "pitstop.sim.cmapss",
    "read_rul": "pitstop.sim.cmapss",
    "shipped": "pitstop.sim.cmapss",
    "MachineFeed": "pitstop.sim.replay",
    "Replay": "pitstop.sim.replay",
    "ReplayStats": "pitstop.sim.replay",
}

__all__ = ["MachineFeed", "Replay", "ReplayStats", "read_cmapss", "read_rul", "shipped"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'pitstop.sim' has no attribute {name!r}")
