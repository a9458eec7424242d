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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

Floats = NDArray[np.float64]

HARVESTER_COMPONENTS: tuple[str, ...] = ("hydraulic_pump", "head_bearing", "fuel_injectors", "drive_belt")
# sensor: decimals it is reported with
SENSORS: dict[str, int] = {
    "load_mode": 0,
    "terrain_slope_pct": 1,
    "engine_rpm": 0,
    "coolant_temp_c": 1,
    "oil_pressure_kpa": 0,
    "exhaust_temp_c": 1,
    "fuel_rate_lph": 2,
    "hydraulic_pressure_bar": 1,
    "hydraulic_temp_c": 1,
    "shaker_vibration_mm_s": 2,
    "head_bearing_temp_c": 1,
    "drive_slip_pct": 2,
    "ground_speed_kmh": 2,
    "lat": 6,
    "lon": 6,
}
PICKING, TRANSIT, IDLE = 0, 1, 2
DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
SEASON_MONTHS = (1, 2, 3, 4, 5, 6, 10, 11, 12)
ORCHARD = (39.230, 39.262, -0.470, -0.430)  # south, north, west, east
_GRID = 4
_ROW_KM = 111.32 * (ORCHARD[1] - ORCHARD[0]) / _GRID
_STEP = 1 / 6  # nominal hours between readings
_TEMPS = ("coolant_temp_c", "exhaust_temp_c", "hydraulic_temp_c", "head_bearing_temp_c")


@dataclass(frozen=True)
class _Wear:
    shape: float  # Weibull shape of the hidden life
    scale: float  # Weibull scale, wear-hours
    rates: tuple[float, float, float]  # wear-hours per running hour: picking, transit, idle
    service: float  # scheduled renewal at this age (inf: none)
    curve: Callable[[Floats], Floats]  # x = age / life -> wear signal d in [0, 1]
    failure: str
    repair: float  # median repair hours after a failure
    procedure: str


_WEAR = {
    "hydraulic_pump": _Wear(
        2.5, 2600.0, (1.0, 0.5, 0.3), math.inf, lambda x: x**2,
        "hydraulic pump failed: no pressure under load; pump replaced", 30.0, "H-201",
    ),
    "head_bearing": _Wear(
        2.0, 2000.0, (1.3, 0.2, 0.1), math.inf, lambda x: np.expm1(4 * x) / math.expm1(4),
        "shaker head bearing seized; bearing and seals replaced", 20.0, "H-202",
    ),
    "fuel_injectors": _Wear(
        3.0, 3000.0, (1.0, 0.9, 0.4), 2400.0, lambda x: x**1.6,
        "engine derated, misfiring and smoking: fouled injectors replaced", 16.0, "H-203",
    ),
    "drive_belt": _Wear(
        3.5, 2000.0, (1.0, 1.4, 0.1), 1700.0, lambda x: x**2.5,
        "drive belt snapped; belt and idler replaced", 6.0, "H-204",
    ),
}  # fmt: skip
_SERVICE = np.array([_WEAR[c].service for c in HARVESTER_COMPONENTS])
_RATES = np.array([_WEAR[c].rates for c in HARVESTER_COMPONENTS])


@dataclass
class HarvesterHistory:
    readings: pl.DataFrame  # machine_id, ts, one Float64 column per sensor (null: missing)
    events: pl.DataFrame  # machine_id, ts, kind, component, detail


@dataclass(frozen=True)
class _Orchard:
    base: Floats  # per block: base grade, %
    amp: Floats  # undulation along the row, %
    wavelength: Floats  # km
    phase: Floats

    @classmethod
    def build(cls, seed: int) -> _Orchard:
        rng = np.random.default_rng([seed, 7])
        n = _GRID * _GRID
        hill = rng.permutation(np.arange(n) < 6)  # terraced hillside blocks; the rest is plain
        base = np.where(hill, rng.uniform(7.5, 10, n), rng.uniform(0.3, 1.5, n))
        return cls(base, rng.uniform(0.2, 0.8, n), rng.uniform(0.15, 0.4, n), rng.uniform(0, 2 * np.pi, n))

    def slope(self, lat: Floats, lon: Floats) -> Floats:
        row = ((lat - ORCHARD[0]) / (ORCHARD[1] - ORCHARD[0]) * _GRID).clip(0, _GRID - 1e-9)
        col = ((lon - ORCHARD[2]) / (ORCHARD[3] - ORCHARD[2]) * _GRID).clip(0, _GRID - 1e-9)
        b = row.astype(np.int64) * _GRID + col.astype(np.int64)
        along = (row % 1) * _ROW_KM
        return np.abs(
            self.base[b] + self.amp[b] * np.sin(2 * np.pi * along / self.wavelength[b] + self.phase[b])
        )


def _corner(b: NDArray[np.int64]) -> tuple[Floats, Floats]:
    """South-west corner (lat, lon) of blocks ``b``."""
    dlat, dlon = (ORCHARD[1] - ORCHARD[0]) / _GRID, (ORCHARD[3] - ORCHARD[2]) / _GRID
    lat: Floats = ORCHARD[0] + (b // _GRID).astype(np.float64) * dlat
    lon: Floats = ORCHARD[2] + (b % _GRID).astype(np.float64) * dlon
    return lat, lon


def _weather(seed: int, days: NDArray[np.int64]) -> tuple[NDArray[np.bool_], Floats]:
    """Rain (no work) and the day's temperature anomaly, per day; the same for every machine."""
    rngs = [np.random.default_rng([seed, 17, int(d)]) for d in days]
    rain = np.array([r.random() < 0.06 for r in rngs], dtype=bool)
    return rain, np.array([r.normal(0, 2.0) for r in rngs], dtype=np.float64)


@dataclass
class _Machine:
    machine_id: str
    rng: np.random.Generator
    gain: Floats  # per sensor (SENSORS order), multiplicative
    offset: Floats  # per sensor, additive (temperatures)
    has_hyd_temp: bool
    second_shift: float
    ages: Floats
    lives: Floats
    down_until: float = -math.inf
    running: float = 0.0  # running hours so far
    next_inspection: float = 250.0
    seq: int = 0

    @classmethod
    def new(cls, seed: int, index: int, prefix: str) -> _Machine:
        rng = np.random.default_rng([seed, 1, index])
        k = len(SENSORS)
        lives = _draw_lives(rng)
        ages = (rng.uniform(0, 0.8, 4) * lives).clip(max=0.9 * _SERVICE)
        return cls(
            f"{prefix}{index + 1:03d}",
            rng,
            rng.normal(1, 0.02, k),
            rng.normal(0, 1.5, k),
            index % 3 != 2,  # every third machine has no hydraulic oil temperature sensor
            float(rng.uniform(0.3, 0.8)),
            ages,
            lives,
            next_inspection=float(rng.uniform(0, 250)),
        )


def _draw_lives(rng: np.random.Generator) -> Floats:
    wear = [_WEAR[c] for c in HARVESTER_COMPONENTS]
    return np.array([max(100.0, w.scale * rng.weibull(w.shape)) for w in wear])


Event = tuple[float, str, str | None, str]  # hours since the epoch, kind, component, detail


def _run(
    m: _Machine, orchard: _Orchard, days: NDArray[np.int64], weather: tuple[NDArray[np.bool_], Floats],
    t_lo: float, t_hi: float,
) -> tuple[Floats, Floats, list[Event]]:  # fmt: skip
    """One machine over ``days`` (since the epoch), readings in [t_lo, t_hi) hours since the epoch:
    reading times, values (readings × SENSORS, NaN: missing) and events. Updates the machine."""
    rng, n_days = m.rng, len(days)
    dates = days.astype("datetime64[D]")
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    working = np.isin(month, SEASON_MONTHS) & ((days + 3) % 7 != 6) & ~weather[0]
    first, second = working & (rng.random(n_days) < 0.93), working & (rng.random(n_days) < m.second_shift)
    hours = days * 24.0
    starts = np.concatenate(
        [hours + 6 + rng.uniform(0, 0.4, n_days), hours + 14 + rng.uniform(0.05, 0.4, n_days)]
    )
    ends = np.concatenate(
        [hours + 14 - rng.uniform(0, 0.3, n_days), hours + 22 - rng.uniform(0, 0.4, n_days)]
    )
    starts, ends = np.maximum(starts, max(t_lo, m.down_until)), np.minimum(ends, t_hi)
    keep = np.concatenate([first, second]) & (ends - starts > 0.25)
    order = np.argsort(starts[keep])
    starts, ends = starts[keep][order], ends[keep][order]
    overhauls = [
        float(h + 24 * rng.uniform(1, 20) + 8)  # an overhaul in the first weeks of July
        for h, july_first in zip(hours, (dates == dates.astype("datetime64[M]")) & (month == 7), strict=True)
        if july_first and h >= t_lo
    ]
    bounds = np.concatenate([[0.0], np.cumsum(ends - starts)])
    total = float(bounds[-1])
    steps = _STEP * rng.uniform(0.55, 1.45, int(total / _STEP * 1.2) + 20)
    steps[rng.random(len(steps)) < 0.01] *= 2
    op = np.cumsum(steps) - steps[0] * rng.random()
    op = op[op < total]
    n = len(op)
    blk = np.searchsorted(bounds, op, side="right") - 1
    t = starts[blk] + op - bounds[blk]
    tin = op - bounds[blk]  # hours into the shift

    # regimes: picking bouts alternating with transit or idle, along the running clock
    ns = int(total / 0.3) + 16
    idx = np.arange(ns)
    kinds = np.where(idx % 2 == 0, PICKING, np.where(rng.random(ns) < 0.45, TRANSIT, IDLE))
    mean, shape = np.array([0.9, 0.2, 0.15])[kinds], np.array([3.0, 4.0, 2.0])[kinds]
    seg_start = np.concatenate([[0.0], np.cumsum(rng.gamma(shape, mean / shape))])
    seg = np.searchsorted(seg_start, op, side="right") - 1
    regime = kinds[seg]
    regime[tin < 0.2] = TRANSIT
    # where: a block per bout (75% stay in the same block), a row in it, up and down at a speed
    moved = (rng.random(ns) < 0.25) | (idx == 0)
    block = rng.integers(0, _GRID * _GRID, ns)[np.maximum.accumulate(np.where(moved, idx, 0))]
    row, phase = rng.random(ns), rng.random(ns)
    speed = np.where(kinds == PICKING, rng.uniform(1.5, 2.5, ns), rng.uniform(8, 14, ns))
    speed[kinds == IDLE] = 0.0
    dlat, dlon = (ORCHARD[1] - ORCHARD[0]) / _GRID, (ORCHARD[3] - ORCHARD[2]) / _GRID
    lat0, lon0 = _corner(block[seg])
    into = op - seg_start[seg]
    along = 1 - np.abs(2 * ((phase[seg] + speed[seg] * into / _ROW_KM) % 1) - 1)  # up and down
    lat = lat0 + dlat * np.where(regime == PICKING, along, 0.5)
    lon = lon0 + dlon * row[seg]
    # transit: in a straight line from the last bout's block to the next one's, or at the start of
    # a shift from the yard (the orchard's south-west corner) to the first block
    yard = tin < 0.2
    src_lat, src_lon = _corner(block[np.maximum(seg - 1, 0)])
    dst_lat, dst_lon = _corner(block[np.minimum(seg + 1, ns - 1)])
    src_lat, src_lon = (
        np.where(yard, ORCHARD[0], src_lat + dlat / 2),
        np.where(yard, ORCHARD[2], src_lon + dlon / 2),
    )
    dst_lat, dst_lon = np.where(yard, lat0, dst_lat) + dlat / 2, np.where(yard, lon0, dst_lon) + dlon / 2
    p = np.where(yard, tin / 0.2, into / (seg_start[seg + 1] - seg_start[seg])).clip(0, 1)
    moving = regime == TRANSIT
    lat = np.where(moving, src_lat + (dst_lat - src_lat) * p, lat)
    lon = np.where(moving, src_lon + (dst_lon - src_lon) * p, lon)
    slope = orchard.slope(lat, lon) * np.where(moving, 0.5, 1.0)
    wheel = np.where(yard, 10.0, speed[seg])

    # wear: ages along the running clock, lives ended by events
    dt = np.diff(op, prepend=op[0] if n else 0.0)
    belt = 1 + np.array([0, 0, 0, 1.0])[:, None] * slope / 20
    wear = np.cumsum(dt * _RATES[:, regime] * belt, axis=1)
    x = np.zeros((4, n))
    dropped = np.zeros(n, dtype=bool)
    events: list[Event] = []
    i0 = 0
    while i0 < n:
        zero = wear[:, i0] - m.ages  # the wear clock when each component was new
        cands: list[tuple[float, str, list[int], int]] = []
        for c in range(4):
            f = max(i0 + 1, int(np.searchsorted(wear[c], zero[c] + m.lives[c])))
            if f < n:
                cands.append((float(t[f - 1] + rng.uniform(0.5, 5) / 60), "failure", [c], f - 1))
            s = int(np.searchsorted(wear[c], zero[c] + _SERVICE[c])) if math.isfinite(_SERVICE[c]) else n
            if s < n:
                at = float(ends[blk[max(s - 1, i0)]] + rng.uniform(0.05, 0.5))
                cands.append((at, "maintenance", [c], int(np.searchsorted(t, at)) - 1))
        for at in overhauls:
            cands.append((at, "overhaul", [], int(np.searchsorted(t, at)) - 1))
        if not cands:
            x[:, i0:] = (m.ages[:, None] + wear[:, i0:] - wear[:, i0, None]) / m.lives[:, None]
            m.ages = m.ages + wear[:, -1] - wear[:, i0]
            break
        at, kind, comps, last = min(cands, key=lambda cand: cand[0])
        if last >= i0:
            x[:, i0 : last + 1] = (m.ages[:, None] + wear[:, i0 : last + 1] - wear[:, i0, None]) / m.lives[
                :, None
            ]
            m.ages = m.ages + wear[:, last] - wear[:, i0]
        down = 0.0
        if kind == "failure":
            c = comps[0]
            name = HARVESTER_COMPONENTS[c]
            events.append((at, "failure", name, f"{_WEAR[name].failure} ({_WEAR[name].procedure})"))
            down = _WEAR[name].repair * math.exp(rng.normal(0, 0.5))
            also = [j for j in range(4) if j != c and m.ages[j] >= 0.9 * _SERVICE[j]]
            for j in also:
                events.append(
                    (at + 1 / 60, "maintenance", HARVESTER_COMPONENTS[j], _renewal(j, m, "during repair"))
                )
            comps = [c, *also]
        elif kind == "maintenance":
            events.append(
                (
                    at,
                    "maintenance",
                    HARVESTER_COMPONENTS[comps[0]],
                    _renewal(comps[0], m, "scheduled service"),
                )
            )
            down = rng.uniform(1.5, 4)
        else:
            overhauls.remove(at)
            comps = _overhaul(m, at, rng, events)
        fresh = _draw_lives(rng)
        for c in comps:
            m.ages[c], m.lives[c] = 0.0, fresh[c]
        m.down_until = at + down
        nxt = max(last + 1, i0, int(np.searchsorted(t, m.down_until)))
        dropped[last + 1 : nxt] = True
        i0 = nxt
    for at in overhauls:  # parked, after the last reading of this stretch
        fresh = _draw_lives(rng)
        for c in _overhaul(m, at, rng, events):
            m.ages[c], m.lives[c] = 0.0, fresh[c]

    d = {name: _WEAR[name].curve(x[c].clip(0, 1)) for c, name in enumerate(HARVESTER_COMPONENTS)}
    running = m.running + op
    while n and m.next_inspection < running[-1]:
        i = int(np.searchsorted(running, m.next_inspection))
        m.next_inspection += 250.0
        if dropped[i]:
            continue
        worst = int(np.argmax(x[:, i]))
        at = float(starts[blk[i]] - rng.uniform(0.1, 0.5))
        if x[worst, i] > 0.7 and rng.random() < 0.5:
            name = HARVESTER_COMPONENTS[worst]
            events.append(
                (at, "inspection", name, f"routine 250 h inspection (H-105): wear noted on the {name}")
            )
        else:
            events.append((at, "inspection", None, "routine 250 h inspection (H-105): no findings"))
    m.running += total
    values = _physics(m, rng, t, tin, regime, slope, wheel, lat, lon, d, blk, weather, days)
    return t[~dropped], values[~dropped], events


def _renewal(c: int, m: _Machine, why: str) -> str:
    name = HARVESTER_COMPONENTS[c]
    return f"{why}: {name} renewed at {m.ages[c]:.0f} h ({_WEAR[name].procedure})"


def _overhaul(m: _Machine, at: float, rng: np.random.Generator, events: list[Event]) -> list[int]:
    """The off-season overhaul renews most components past half their typical life (or service)."""
    limit = np.minimum(0.5 * np.array([_WEAR[c].scale for c in HARVESTER_COMPONENTS]), _SERVICE)
    comps = [c for c in range(4) if m.ages[c] > limit[c] and rng.random() < 0.8]
    for k, c in enumerate(comps):
        name = HARVESTER_COMPONENTS[c]
        events.append((at + k / 60, "maintenance", name, _renewal(c, m, "off-season overhaul (H-301)")))
    return comps


def _physics(
    m: _Machine, rng: np.random.Generator, t: Floats, tin: Floats, regime: NDArray[np.int64], slope: Floats,
    wheel: Floats, lat: Floats, lon: Floats, d: dict[str, Floats], blk: NDArray[np.int64],
    weather: tuple[NDArray[np.bool_], Floats], days: NDArray[np.int64],
) -> Floats:  # fmt: skip
    """Sensor values (readings × SENSORS) from the operating state and the wear signals ``d``."""
    n = len(t)
    g, o = dict(zip(SENSORS, m.gain, strict=True)), dict(zip(SENSORS, m.offset, strict=True))
    day = np.floor(t / 24).astype(np.int64)
    dates = day.astype("datetime64[D]")
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.int64)
    anomaly = weather[1][(day - days[0]).clip(0, len(days) - 1)] if len(days) else 0.0
    ambient = 18.5 - 7.5 * np.cos(2 * np.pi * (doy - 20) / 365.25) + 5 * np.sin(2 * np.pi * (t % 24 - 9) / 24)
    ambient = ambient + anomaly
    pick, transit, idle = regime == PICKING, regime == TRANSIT, regime == IDLE
    pump, bearing, inj, belt = (d[c] for c in HARVESTER_COMPONENTS)
    load = np.array([0.62, 0.45, 0.08])[regime] + np.array([0.012, 0.018, 0.0])[regime] * slope
    load = (load + rng.normal(0, 0.04, n)).clip(0.03, 1.0)
    rpm = np.array([2100.0, 1950.0, 850.0])[regime] * g["engine_rpm"] - 3 * slope * ~idle - 60 * inj * load
    rpm = rpm + rng.normal(0, 20, n)
    fuel = ((3 + 30 * load) * (1 + 0.22 * inj) * g["fuel_rate_lph"] + rng.normal(0, 0.6, n)).clip(0)
    exhaust = 170 + 420 * load + 110 * inj * (0.4 + load) + 3 * o["exhaust_temp_c"] + rng.normal(0, 10, n)
    coolant = ambient + (86 + 6 * load + 5 * inj - ambient) * -np.expm1(-tin / 0.25)
    coolant = coolant + o["coolant_temp_c"] + rng.normal(0, 0.8, n)
    oil = (140 + 0.12 * rpm - 1.2 * (coolant - 88)) * g["oil_pressure_kpa"] + rng.normal(0, 8, n)
    demand = np.array([175.0, 70.0, 35.0])[regime] + 2 * slope * pick
    hyd = demand * (1 - 0.25 * pump) * g["hydraulic_pressure_bar"] + rng.normal(0, 4 * (1 + 1.5 * pump))
    hyd_temp = ambient + (np.array([52.0, 25.0, 15.0])[regime] + 20 * pump) * -np.expm1(-tin / 0.6)
    hyd_temp = hyd_temp + o["hydraulic_temp_c"] + rng.normal(0, 1.0, n)
    missing = (rng.random(int(blk.max()) + 1 if n else 0) < 0.08)[blk] | (rng.random(n) < 0.01)
    hyd_temp[missing | (not m.has_hyd_temp)] = np.nan
    shaking = np.array([1.0, 0.3, 0.15])[regime]
    vib = (np.array([7.5, 2.5, 1.2])[regime] + 16 * bearing * shaking) * g["shaker_vibration_mm_s"]
    vib = vib * rng.lognormal(0, 0.12, n)
    bearing_temp = np.array([32.0, 12.0, 5.0])[regime] + 38 * bearing * np.array([1.0, 0.4, 0.2])[regime]
    bearing_temp = (
        ambient + bearing_temp * -np.expm1(-tin / 0.4) + o["head_bearing_temp_c"] + rng.normal(0, 1.2, n)
    )
    slip = np.where(idle, 0.0, 1.2 + 0.12 * slope + 0.6 * transit + 10 * belt * (1 + slope / 15))
    slip = slip + np.abs(rng.normal(0, 0.3, n))
    ground = (wheel * (1 - slip / 100) + rng.normal(0, 0.1, n)).clip(0)
    ground[idle] = np.abs(rng.normal(0, 0.05, n))[idle]
    columns = {
        "load_mode": regime.astype(np.float64),
        "terrain_slope_pct": (slope + rng.normal(0, 0.3, n)).clip(0),
        "engine_rpm": rpm,
        "coolant_temp_c": coolant,
        "oil_pressure_kpa": oil,
        "exhaust_temp_c": exhaust,
        "fuel_rate_lph": fuel,
        "hydraulic_pressure_bar": hyd.clip(0),
        "hydraulic_temp_c": hyd_temp,
        "shaker_vibration_mm_s": vib,
        "head_bearing_temp_c": bearing_temp,
        "drive_slip_pct": slip,
        "ground_speed_kmh": ground,
        "lat": lat + rng.normal(0, 3e-5, n),
        "lon": lon + rng.normal(0, 3e-5, n),
    }
    glitch, which = rng.random(n) < 1e-4, rng.integers(0, len(_TEMPS), n)
    for j, name in enumerate(_TEMPS):
        columns[name][glitch & (which == j)] = -40.0  # an open-circuit temperature sensor
    return np.column_stack([np.round(columns[s], k) for s, k in SENSORS.items()])


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


class LiveHarvesters:
    """A live fleet for the demo: each call advances every machine by its next readings (one
    reading is ~10 simulated minutes; nights and repairs are jumps in ``ts``). The physics are
    those of ``simulate``, run a week at a time per machine; each machine keeps its own clock."""

    def __init__(self, machines: int, *, seed: int, start: datetime, prefix: str = "H-", chunk_days: int = 7):
        self._seed, self._chunk = seed, chunk_days
        self._orchard = _Orchard.build(seed)
        self._fleet = [_Machine.new(seed, i, prefix) for i in range(machines)]
        self._cursor = [_hours(start)] * machines
        self._pending: list[list[tuple[float, Floats]]] = [[] for _ in range(machines)]
        self._events: list[list[Event]] = [[] for _ in range(machines)]
        self._latest = [-math.inf] * machines

    @property
    def machine_ids(self) -> list[str]:
        return [m.machine_id for m in self._fleet]

    def next_readings(self, n_per_machine: int = 1) -> list[dict[str, Any]]:
        """``{"machine_id", "ts", "seq", "values"}`` per reading, machine by machine; optional
        sensors that did not report are left out of ``values``."""
        out = []
        for i, m in enumerate(self._fleet):
            for _ in range(n_per_machine):
                while not self._pending[i]:
                    self._advance(i)
                t, row = self._pending[i].pop()
                values = {s: float(v) for s, v in zip(SENSORS, row, strict=True) if not math.isnan(v)}
                out.append({"machine_id": m.machine_id, "ts": _datetime(t), "seq": m.seq, "values": values})
                m.seq += 1
                self._latest[i] = t
        return out

    def next_events(self) -> list[dict[str, Any]]:
        """Events that happened by each machine's latest reading, each returned once."""
        out = []
        for i, m in enumerate(self._fleet):
            due = sorted(e for e in self._events[i] if e[0] <= self._latest[i])
            self._events[i] = [e for e in self._events[i] if e[0] > self._latest[i]]
            for t, kind, component, detail in due:
                out.append(
                    {
                        "machine_id": m.machine_id,
                        "ts": _datetime(t),
                        "kind": kind,
                        "component": component,
                        "detail": detail,
                    }
                )
        return out

    def _advance(self, i: int) -> None:
        for _ in range(400):  # a machine parked for the off-season reports nothing for months
            t_lo = self._cursor[i]
            first = math.floor(t_lo / 24)
            days = np.arange(first, first + self._chunk, dtype=np.int64)
            t_hi = float(days[-1] + 1) * 24
            t, values, events = _run(
                self._fleet[i], self._orchard, days, _weather(self._seed, days), t_lo, t_hi
            )
            self._cursor[i] = t_hi
            self._events[i].extend(events)
            if len(t):
                self._pending[i] = list(zip(t[::-1], values[::-1], strict=True))
                return
        raise RuntimeError(f"{self._fleet[i].machine_id} produced no readings in {400 * self._chunk} days")


def _datetime(hours: float) -> datetime:
    return datetime.fromtimestamp(round(hours * 3600), UTC)
