"""One harvester at a time for ``pitstop.sim.harvester``: its calendar and shifts, where it goes
and in which regime, how its components age, fail and are renewed, and the events that follow."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pitstop.sim._harvester_physics import (
    _GRID,
    _RATES,
    _ROW_KM,
    _SERVICE,
    _WEAR,
    HARVESTER_COMPONENTS,
    IDLE,
    ORCHARD,
    PICKING,
    SENSORS,
    TRANSIT,
    Floats,
    _corner,
    _draw_lives,
    _Orchard,
    _physics,
)

SEASON_MONTHS = (1, 2, 3, 4, 5, 6, 10, 11, 12)
_STEP = 1 / 6  # nominal hours between readings


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
