"""Machine types as data: sensors, roles, units, ranges, components, time unit and per-type options.

A fleet is declared in a TOML fleet file (``pitstop.schema.fleetfile``); the shipped turbofan
type (NASA C-MAPSS) is one such file like any other (``pitstop/fleets/turbofan.toml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pitstop.features.spec import FeatureSpec

# seconds per time unit; "cycles" counts readings
TIME_UNITS: dict[str, float | None] = {
    "cycles": None,
    "seconds": 1.0,
    "minutes": 60.0,
    "hours": 3600.0,
    "days": 86400.0,
}
SENSOR_ROLES = ("sensor", "setting")


@dataclass(frozen=True)
class Sensor:
    name: str
    unit: str
    low: float
    high: float
    description: str = ""
    required: bool = True
    informative: bool = True  # used by the default feature spec
    role: str = "sensor"  # "setting": an operating condition, for regimes

    def in_range(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Component:
    """A part that can fail: failure events may name it; work orders suggest its procedure."""

    name: str
    description: str = ""
    sensors: tuple[str, ...] = ()  # sensors that show its wear (for explanations)
    procedures: dict[str, str] = field(default_factory=dict)  # by priority, "default" for any
    manual: str = ""


@dataclass(frozen=True)
class MachineType:
    name: str
    time_unit: str
    sensors: tuple[Sensor, ...]
    description: str = ""
    # The declarative feature spec; by default, windows over the informative sensors.
    features: FeatureSpec | None = None
    components: tuple[Component, ...] = ()
    # Labels and intervals, in the type's time unit; None: derived (see ``training.horizons``).
    rul_cap: float | None = None
    interval_horizon: float | None = None
    failure_horizon: float | None = None
    policy: dict[str, float] = field(default_factory=dict)  # risk policy overrides
    manuals: tuple[str, ...] = ()
    # "auto": regimes detected from the setting sensors at training; 0: none; N: N regimes
    regimes: int | str = "auto"

    @property
    def sensor_names(self) -> list[str]:
        return [s.name for s in self.sensors]

    @property
    def required(self) -> frozenset[str]:
        return frozenset(s.name for s in self.sensors if s.required)

    @property
    def settings(self) -> list[str]:
        """Operating-condition sensors (role ``setting``)."""
        return [s.name for s in self.sensors if s.role == "setting"]

    @property
    def informative(self) -> list[str]:
        return [s.name for s in self.sensors if s.informative and s.role != "setting"]

    @property
    def unit_seconds(self) -> float | None:
        """Seconds per time unit; None when the type counts readings (``cycles``)."""
        return TIME_UNITS[self.time_unit]

    @property
    def feature_spec(self) -> FeatureSpec:
        if self.features is not None:
            return self.features
        return FeatureSpec(
            tuple(self.informative),
            windows=(5, 10, 30, 60),
            stats=("mean", "std", "slope"),
            hours_since_reset=self.unit_seconds is not None,
            regime_settings=tuple(self.settings),
        )

    @property
    def component_names(self) -> list[str]:
        return [c.name for c in self.components]

    def sensor(self, name: str) -> Sensor:
        for s in self.sensors:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True)
class FleetSchema:
    machine_types: dict[str, MachineType] = field(default_factory=dict)
    source: str = ""  # the fleet file text it was read from, when there is one

    def type_of(self, name: str) -> MachineType:
        found = self.machine_types.get(name)
        if found is None:
            from pitstop.errors import ValidationError

            raise ValidationError(
                f"machine type {name!r} is not in the fleet in force (its types: "
                f"{', '.join(self.machine_types)}); a fleet applied while a server runs takes effect "
                "when it restarts",
                code="unknown_machine_type",
            )
        return found

    @property
    def sensors(self) -> list[str]:
        """Every sensor of any machine type, in natural order (s2 before s10)."""
        names = {s for mt in self.machine_types.values() for s in mt.sensor_names}
        return sorted(names, key=_natural)

    @property
    def informative(self) -> list[str]:
        names = {s for mt in self.machine_types.values() for s in mt.informative}
        return sorted(names, key=_natural)

    @property
    def feature_spec(self) -> FeatureSpec:
        """The spec of the first machine type (a fleet of one type: its own)."""
        return next(iter(self.machine_types.values())).feature_spec

    def summary(self) -> dict[str, Any]:
        return {
            name: {
                "time_unit": mt.time_unit,
                "description": mt.description,
                "sensors": mt.sensor_names,
                "settings": mt.settings,
                "optional": sorted(set(mt.sensor_names) - mt.required),
                "components": mt.component_names,
                "features": mt.feature_spec.hash,
            }
            for name, mt in self.machine_types.items()
        }


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    return head, int(name[len(head) :] or -1)


def default_fleet() -> FleetSchema:
    """The shipped turbofan fleet (C-MAPSS), read from its fleet file."""
    from pitstop.schema.fleetfile import shipped_fleet

    return shipped_fleet("turbofan")
