"""Harvester physics for ``pitstop.sim.harvester``: the sensors and components, the orchard's
terrain, the weather, the wear table and the sensor readings a machine's operating state and wear
produce. The model is documented in ``pitstop.sim.harvester``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
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
ORCHARD = (39.230, 39.262, -0.470, -0.430)  # south, north, west, east
_GRID = 4
_ROW_KM = 111.32 * (ORCHARD[1] - ORCHARD[0]) / _GRID
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


class _Calibration(Protocol):
    """A machine's own sensor gains and offsets (``SENSORS`` order) and whether it has the
    optional hydraulic oil temperature sensor."""

    gain: Floats
    offset: Floats
    has_hyd_temp: bool


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


def _draw_lives(rng: np.random.Generator) -> Floats:
    wear = [_WEAR[c] for c in HARVESTER_COMPONENTS]
    return np.array([max(100.0, w.scale * rng.weibull(w.shape)) for w in wear])


def _physics(
    m: _Calibration, rng: np.random.Generator, t: Floats, tin: Floats, regime: NDArray[np.int64],
    slope: Floats, wheel: Floats, lat: Floats, lon: Floats, d: dict[str, Floats], blk: NDArray[np.int64],
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
