"""Orange-harvester fleet simulator: our own physics, documented.

Self-propelled canopy-shaker harvesters work an orchard near Valencia (a 4×4 grid of blocks in
the box ``ORCHARD``). Everything is drawn from ``numpy.random.default_rng`` seeded by the fleet
seed and the machine's number, so a seed gives the same fleet every time, and machine 3 is the
same machine whether the fleet has 5 or 50.

Calendar. The harvest runs October to June; July to September the machines are parked (no
readings) and get an off-season overhaul. No work on Sundays or rain days (~6% of days, the same
for the whole fleet). Two shifts, 06-14 and 14-22 (UTC: time zones are ignored): a machine works
the first on ~93% of working days, the second on its own share (30-80%). Nothing at night.

Sampling. While running, one reading every ~10 minutes (5.5 to 14.5, ~1% of them missed);
gaps of hours at night and during repairs, months in the off-season. Wear follows the running
clock; timestamps are wall-clock, so the type's time unit is hours.

Operation. A shift opens with a ~12-minute transit from the yard, then alternates picking
(``load_mode`` 0, ~55-minute bouts, up and down a row at 1.5-2.5 km/h) with transit (1, 8-14
km/h between blocks) or idle (2). ``terrain_slope_pct`` is the block's grade (6 terraced blocks
at 7.5-10%, the plain at 0.3-1.5%) plus a small undulation along the row (roads: half of it), so
picking, transit and idle on plain or terrace are distinct operating regimes. Engine load is
~0.62 picking, ~0.45 transit, 0.08 idle, +1-2 points per % of slope; fuel rate, exhaust and
coolant temperature follow load, engine speed follows the regime, hydraulic pressure the shaker
demand (+2 bar per % of slope), and temperatures warm up from ambient (seasonal and daily cycle)
at the start of a shift. Each machine has its own small sensor gains and offsets.
``hydraulic_temp_c`` is optional: every third machine has no sensor, the others drop it for
whole shifts (8%) or single readings (1%). About 1 reading in 10,000 has an open-circuit
temperature (-40 °C, out of range).

Wear. Each component has a hidden life in wear-hours, Weibull-distributed (``_WEAR``); it ages
at a rate set by the regime (the head bearing mostly while shaking, the belt most in transit and
on slopes). With x = age / life, the wear signal d(x) rises from 0 to 1: hydraulic pump x²
(pressure down 25% and noisier, oil temperature up 20 °C), head bearing (e^4x - 1)/(e^4 - 1)
(vibration up ~16 mm/s, bearing temperature up ~38 °C, both mostly when shaking), fuel injectors
x^1.6 (fuel rate up 22%, exhaust up ~110 °C at load, coolant up 5 °C), drive belt x^2.5 (slip up
~10 points, more on slopes, ground speed down with it).

Events. At x = 1 the component fails: a ``failure`` event a few minutes after the last reading,
the component renewed (with components past 90% of their service interval), and the machine down
for a repair of hours to days, then it runs again on a new life. Injectors and belt also have a
service interval (``maintenance`` at the end of the shift that crosses it); the off-season
overhaul renews worn-looking components; a routine ``inspection`` every 250 running hours notes
wear on a component past 70% of its life half of the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from pitstop.sim._harvester_machine import SEASON_MONTHS, _Machine, _run
from pitstop.sim._harvester_physics import (
    HARVESTER_COMPONENTS,
    ORCHARD,
    SENSORS,
    Floats,
    _Orchard,
    _weather,
)
from pitstop.sim.live import LiveHarvesters

__all__ = [
    "DEFAULT_START",
    "HARVESTER_COMPONENTS",
    "ORCHARD",
    "SEASON_MONTHS",
    "SENSORS",
    "HarvesterHistory",
    "LiveHarvesters",
    "simulate",
    "write_history",
]

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class HarvesterHistory:
    readings: pl.DataFrame  # machine_id, ts, one Float64 column per sensor (null: missing)
    events: pl.DataFrame  # machine_id, ts, kind, component, detail


def simulate(
    machines: int = 20,
    days: float = 365.0,
    *,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    prefix: str = "H-",
) -> HarvesterHistory:
    """``machines`` harvesters from ``start`` for ``days``: their readings and events."""
    t_lo = _hours(start)
    t_hi = t_lo + 24 * days
    day_numbers = np.arange(math.floor(t_lo / 24), math.ceil(t_hi / 24), dtype=np.int64)
    orchard, weather = _Orchard.build(seed), _weather(seed, day_numbers)
    ids: list[str] = []
    times: list[Floats] = []
    values: list[Floats] = []
    events: list[tuple[str, float, str, str | None, str]] = []
    for i in range(machines):
        m = _Machine.new(seed, i, prefix)
        t, v, ev = _run(m, orchard, day_numbers, weather, t_lo, t_hi)
        ids.append(m.machine_id)
        times.append(t)
        values.append(v)
        events.extend((m.machine_id, *e) for e in ev if t_lo <= e[0] < t_hi)
    counts = [len(t) for t in times]
    table = np.concatenate(values) if values else np.zeros((0, len(SENSORS)))
    readings = pl.DataFrame(
        [
            pl.Series("machine_id", np.repeat(ids, counts).astype(str), pl.String),
            _timestamps(np.concatenate(times) if times else np.zeros(0)),
            *(pl.Series(s, table[:, j], pl.Float64, nan_to_null=True) for j, s in enumerate(SENSORS)),
        ]
    )
    events.sort(key=lambda e: (e[0], e[1]))
    frame = pl.DataFrame(
        {
            "machine_id": [e[0] for e in events],
            "ts": _timestamps(np.array([e[1] for e in events], dtype=np.float64)),
            "kind": [e[2] for e in events],
            "component": [e[3] for e in events],
            "detail": [e[4] for e in events],
        },
        schema={
            "machine_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "kind": pl.String,
            "component": pl.String,
            "detail": pl.String,
        },
    )
    return HarvesterHistory(readings, frame)


def write_history(history: HarvesterHistory, folder: Path) -> tuple[Path, Path]:
    """``readings.csv`` and ``events.csv`` in ``folder``, as ``pitstop import`` takes them
    (ISO 8601 UTC timestamps ending in Z; an empty cell for a missing value)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    readings, events = folder / "readings.csv", folder / "events.csv"
    iso = pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    history.readings.with_columns(iso).write_csv(readings, null_value="")
    history.events.with_columns(iso).write_csv(events, null_value="")
    return readings, events


def _hours(when: datetime) -> float:
    """Hours since the Unix epoch (a naive datetime is taken as UTC)."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() / 3600


def _timestamps(hours: Floats) -> pl.Series:
    seconds = np.round(hours * 3600).astype(np.int64)  # devices stamp whole seconds
    return pl.Series("ts", seconds * 1_000_000, pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
