"""The feature spec: what is computed from a machine's readings, declared once for online and offline.

Semantics, shared by ``build_features`` (Polars, over a lake version) and ``OnlineFeatures``
(incremental, per micro-batch):

- A machine's readings are taken in ``seq`` order. A reading that arrives (in bus order) after a
  reading of the same machine with a higher seq is *late*: it stays in the lake but no feature
  uses it, online or offline.
- An *episode* starts at install (the machine's first reading) and again at each reset event
  (``reset_events``: maintenance, or a failure and its repair). A reading belongs to the newest
  episode whose event ``ts`` is before its own ``ts`` (a reading stamped at a failure is the last of
  the old episode). Every feature restarts with the episode. A reset event must reach the
  processor before the first reading stamped after it; one that arrives later applies online from
  the next reading on, while the offline build places it by time.
- ``age``: readings in the episode so far (1 at its first); ``hours_since_reset`` (optional): hours
  from the episode's start (its event, or the first reading) to the reading.
- Per sensor: ``last``; ``delta`` (last minus the previous reading, 0 at an episode's first);
  for each window N in ``windows`` and each stat in ``stats``, the stat over the last N readings
  of the episode (fewer while fewer exist): ``mean``, ``std`` (population), ``min``, ``max``,
  ``slope`` (least-squares change per reading, 0 for one reading); ``ewma_<a>`` for each alpha
  (y = x at the first reading, then y = a·x + (1−a)·y); and ``drift``: the mean of the last
  ``drift_window`` readings minus the baseline, the mean of the episode's first
  ``baseline_readings`` readings (of those seen so far while fewer).
- ``fill`` (optional, fitted from training data by ``fit_fill`` when an input can be missing): a
  missing value (an optional sensor not sent) is the machine's last value of that input, or the
  fill value before it ever had one. Applied before anything below, online as offline.
- ``durations`` (optional, e.g. ``"24h"``): windows by time, each stat of ``stats`` over the
  run of the episode's readings back from the reading stamped within the duration before it, at
  most ``duration_max_readings`` of them (see ``pitstop.features.durations``); named
  ``<stat>_<duration>`` after the sensor's other features.
- ``regimes`` (optional, fitted from training data by ``fit_regimes``): each reading is assigned
  to the nearest operating-condition centroid over ``regime_settings`` and every sensor is
  standardised by that regime's mean and std before any of the above.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

STATS = ("mean", "std", "min", "max", "slope")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> tuple[str, float]:
    """``"24h"`` → its canonical label and seconds; a ``ValueError`` naming the format otherwise."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f'{text!r} is not a duration: a positive number and s, m, h or d, e.g. "24h"')
    value, unit = float(match.group(1)), match.group(2)
    return f"{value:g}{unit}", value * _SECONDS[unit]


SNAP = 1e-9


def settle(values: Any) -> Any:
    """Feature values as models see them: |x| < 1e-9 as exactly 0, the rest rounded to float32
    precision (kept as float64).

    Online and offline compute the same numbers up to rounding (~1e-12 relative), but a tree model
    can split exactly there: sensors are quantised, so a window mean of 0.113 can sit exactly on a
    threshold halfway between 0.112 and 0.114 seen in training, and zero is split from anything
    above 1e-35. Rounded to 7 significant digits both land on the same value.
    """
    import numpy as np

    out = np.asarray(values, np.float64).astype(np.float32).astype(np.float64)
    out[np.abs(values) < SNAP] = 0.0
    return out


@dataclass(frozen=True)
class Regimes:
    """Operating-condition normalisation fitted from training data (one row per regime)."""

    settings: tuple[str, ...]
    centroids: tuple[tuple[float, ...], ...]
    mean: tuple[tuple[float, ...], ...]  # per regime, per sensor of the spec
    std: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class FeatureSpec:
    sensors: tuple[str, ...]
    windows: tuple[int, ...] = (5, 10, 20, 30)
    stats: tuple[str, ...] = STATS
    ewma_alphas: tuple[float, ...] = (0.1,)
    delta: bool = True
    drift_window: int = 10
    baseline_readings: int = 10
    hours_since_reset: bool = False
    reset_events: tuple[str, ...] = ("maintenance", "failure")
    regime_settings: tuple[str, ...] = ()
    regime_count: int = 0
    regimes: Regimes | None = None
    version: int = 2
    fill: tuple[float, ...] | None = None  # per input (sensors, then settings); see the module doc
    durations: tuple[str, ...] = ()  # windows by time ("24h"); see the module doc
    duration_max_readings: int = 128

    def __post_init__(self) -> None:
        if not self.sensors:
            raise ValueError("a feature spec needs at least one sensor")
        if len(set(self.sensors)) != len(self.sensors):
            raise ValueError("feature spec sensors must be unique")
        if any(w < 1 for w in (*self.windows, self.drift_window, self.baseline_readings)):
            raise ValueError("feature windows must be at least one reading")
        unknown = set(self.stats) - set(STATS)
        if unknown:
            raise ValueError(f"unknown window stats {sorted(unknown)}; known: {', '.join(STATS)}")
        if any(not 0 < a <= 1 for a in self.ewma_alphas):
            raise ValueError("ewma alphas must be in (0, 1]")
        if self.duration_max_readings < 1:
            raise ValueError("duration_max_readings must be at least one reading")
        for label in self.durations:
            if parse_duration(label)[0] != label:
                raise ValueError(
                    f"duration {label!r} is not in its canonical form {parse_duration(label)[0]!r}"
                )
        if len(set(self.durations)) != len(self.durations):
            raise ValueError("feature spec durations must be unique")
        if self.regime_count and not self.regime_settings:
            raise ValueError("regime_count needs regime_settings (the operating-condition columns)")
        if set(self.regime_settings) & set(self.sensors):
            raise ValueError("operating-condition settings cannot also be featurised sensors")

    @property
    def max_window(self) -> int:
        """Readings the online state keeps per machine: the longest window."""
        longest = self.duration_max_readings if self.durations else 0
        return max(*self.windows, self.drift_window, longest, 2)

    @property
    def inputs(self) -> list[str]:
        """Columns a reading must carry: the sensors, then the regime settings."""
        return [*self.sensors, *self.regime_settings]

    @property
    def per_sensor(self) -> list[str]:
        out = ["last"]
        if self.delta:
            out.append("delta")
        out += [f"{stat}_{w}" for w in self.windows for stat in self.stats]
        out += [f"ewma_{a:g}" for a in self.ewma_alphas]
        out.append("drift")
        out += [f"{stat}_{d}" for d in self.durations for stat in self.stats]
        return out

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @cached_property
    def name_set(self) -> frozenset[str]:
        """``names`` as a set, for checking a row's keys at once."""
        return frozenset(self._names)

    @cached_property
    def _names(self) -> tuple[str, ...]:  # asked for on every prediction: built once
        head = ["age", *(["hours_since_reset"] if self.hours_since_reset else [])]
        return (*head, *(f"{s}__{f}" for s in self.sensors for f in self.per_sensor))

    def with_regimes(self, regimes: Regimes | None) -> FeatureSpec:
        return replace(self, regimes=regimes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["fill"] is None:  # absent rather than null: specs without it keep their hash
            del out["fill"]
        if not out["durations"]:  # likewise for specs without windows by time
            del out["durations"], out["duration_max_readings"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        data = dict(data)
        for key in (
            "sensors",
            "windows",
            "stats",
            "ewma_alphas",
            "reset_events",
            "regime_settings",
            "fill",
            "durations",
        ):
            if key in data:
                data[key] = tuple(data[key]) if data[key] is not None else None
        if data.get("regimes") is not None:
            r = data["regimes"]
            data["regimes"] = Regimes(
                tuple(r["settings"]),
                *(tuple(tuple(float(v) for v in row) for row in r[k]) for k in ("centroids", "mean", "std")),
            )
        return cls(**data)

    @cached_property  # a frozen spec: asked for on every micro-batch (lanes compare specs)
    def hash(self) -> str:
        """Stable across processes and Python versions: sha256 of the canonical JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
