"""Fleet simulation: C-MAPSS data and a replay that speaks the ingest protocol."""

from pitstop.sim.cmapss import read_cmapss, read_rul, shipped
from pitstop.sim.replay import MachineFeed, Replay, ReplayStats

__all__ = ["MachineFeed", "Replay", "ReplayStats", "read_cmapss", "read_rul", "shipped"]
