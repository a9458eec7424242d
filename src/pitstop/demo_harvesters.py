"""``pitstop demo --fleet harvesters``: the whole loop on the seeds' reference fleet, simulated.

- The fleet is the shipped fleet file ``pitstop/fleets/harvesters.toml``, applied to the data dir
  like any user's (``pitstop fleet apply``).
- Last season: ``HISTORY_MACHINES`` harvesters simulated over a year (``pitstop.sim.harvester``:
  seasons, shifts, terrain, four wear modes, failures and repairs) are written as CSV files and
  brought in through the history importer (``pitstop import readings`` / ``events``), the path a
  plantation takes with its own records.
- A champion for the ``harvester`` type is trained on them (hours, irregular sampling, regimes,
  an optional sensor with gaps, a component classifier from the named failures).
- The live fleet: ``LIVE_MACHINES`` other harvesters, simulated up to now and cut before their
  first failure, replay their recorded readings (with their own timestamps) through
  ``POST /api/v1/readings``, one device token each.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from pitstop.config import Settings
from pitstop.fleetops import apply_to_data_dir
from pitstop.ingest.history import import_readings
from pitstop.ingest.history_events import import_events
from pitstop.platform import Platform
from pitstop.schema import shipped_fleet
from pitstop.sim import MachineFeed
from pitstop.sim.harvester import HarvesterHistory, simulate, write_history
from pitstop.store import Machine
from pitstop.training import train_and_register

Echo = Callable[[str], None]

TYPE = "harvester"
HISTORY_MACHINES = 12
HISTORY_DAYS = 365
LIVE_MACHINES = 10
LIVE_DAYS = 150
SEED = 7


def open_platform(settings: Settings, echo: Echo) -> Platform:
    """The data dir with the shipped harvester fleet file applied (once; as ``pitstop fleet
    apply`` does, so a data dir holding other machines refuses it with the reason)."""
    result = apply_to_data_dir(
        settings, shipped_fleet("harvesters"), origin="shipped harvesters.toml", actor="demo"
    )
    if not result["unchanged"]:
        echo(f"fleet: harvesters.toml applied as version {result['version']}")
    return Platform.open(settings)


def seed_history(platform: Platform, echo: Echo, progress: Any = None) -> bool:
    """Last season's harvesters into the lake through the history importer (once)."""
    if platform.lake.count("telemetry") > 0:
        return False
    history = simulate(HISTORY_MACHINES, HISTORY_DAYS, seed=SEED, prefix="H-")
    failures = history.events.filter(pl.col("kind") == "failure").height
    echo(
        f"seeding the lake with last season: {HISTORY_MACHINES} harvesters over {HISTORY_DAYS} days, "
        f"{history.readings.height:,} readings, {failures} failures"
    )
    s = platform.settings
    with tempfile.TemporaryDirectory() as folder:
        readings, events = write_history(history, Path(folder))
        done = import_readings(
            [readings],
            lake=platform.lake,
            db=platform.db,
            fleet=platform.fleet,
            max_future_skew_s=s.max_future_skew_s,
            machine_type=TYPE,
            progress=progress,
        )
        logged = import_events(
            events,
            lake=platform.lake,
            db=platform.db,
            fleet=platform.fleet,
            max_future_skew_s=s.max_future_skew_s,
        )
    with platform.db.session() as session:  # last season's machines are not in the field any more
        for machine in session.query(Machine).filter(
            Machine.machine_id.in_(history.readings["machine_id"].unique().to_list())
        ):
            machine.status = "retired"
    echo(
        f"imported {done.stored:,} readings ({done.quarantined} quarantined, {done.rejected} rejected) "
        f"and {logged.stored} events"
    )
    platform.db.audit("demo", "seed_lake", fleet="harvesters", rows=done.stored, events=logged.stored)
    return True


def ensure_champion(platform: Platform, echo: Echo, progress: Any = None) -> str:
    registry = platform.registry_for(TYPE)
    version = registry.alias_version("champion")
    if version is not None:
        echo(f"champion model: {registry.model_name} version {version}")
        return version
    echo("no harvester champion yet: training one on last season's lake data")
    result = train_and_register(platform, alias="champion", progress=progress, machine_type=TYPE)
    m = result.bundle.metrics
    echo(
        f"trained version {result.version} in {result.seconds:.1f}s on {result.rows:,} readings of "
        f"{result.machines} harvesters: CV RMSE {m['cv_rmse']:.1f} h (RUL cap {result.bundle.rul_cap:g} h), "
        f"component accuracy {m.get('cv_component_accuracy', float('nan')):.0%}"
    )
    return result.version


def live_history(now: datetime | None = None) -> tuple[pl.DataFrame, list[str]]:
    """The live fleet's recorded readings: simulated up to ``now``, each machine cut before its
    first failure (as a fleet in the field is, at a random point of its life)."""
    now = now or datetime.now(UTC)
    start = (now - timedelta(days=LIVE_DAYS)).replace(minute=0, second=0, microsecond=0)
    history = simulate(LIVE_MACHINES, LIVE_DAYS, seed=SEED + 1, start=start, prefix="HV-")
    return before_first_failure(history, now)


def before_first_failure(history: HarvesterHistory, now: datetime) -> tuple[pl.DataFrame, list[str]]:
    """A simulated history's readings up to ``now``, each machine cut before its first failure or
    maintenance, and the machines left."""
    first = (
        history.events.filter(pl.col("kind").is_in(["failure", "maintenance"]))
        .group_by("machine_id")
        .agg(pl.col("ts").min().alias("_end"))
    )
    readings = (
        history.readings.join(first, on="machine_id", how="left")
        .filter(pl.col("_end").is_null() | (pl.col("ts") < pl.col("_end")))
        .filter(pl.col("ts") <= now)
        .drop("_end")
        .sort("machine_id", "ts")
    )
    return readings, sorted(readings["machine_id"].unique().to_list())


def live_feeds(readings: pl.DataFrame, tokens: dict[str, str]) -> list[MachineFeed]:
    sensors = [c for c in readings.columns if c not in ("machine_id", "ts")]
    feeds = []
    for (machine_id,), group in readings.group_by("machine_id", maintain_order=True):
        values = [
            {k: v for k, v in row.items() if v is not None}
            for row in group.select(sensors).iter_rows(named=True)
        ]
        feeds.append(
            MachineFeed(
                str(machine_id),
                tokens[str(machine_id)],
                list(range(1, group.height + 1)),
                values,
                stamps=group["ts"].to_list(),
            )
        )
    return feeds
