from __future__ import annotations

from dataclasses import dataclass, field, replace

from pitstop.features.spec import FeatureSpec


@dataclass(frozen=True)
class Sensor:
    name: str
    unit: str
    low: float
    high: float
    description: str = ""
    required: bool = True
    informative: bool = True  # used by the default feature spec

    def in_range(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class MachineType:
    name: str
    time_unit: str
    sensors: tuple[Sensor, ...]
    description: str = ""
    # The declarative feature spec; its sensors default to the informative ones.
    features: FeatureSpec | None = None

    @property
    def sensor_names(self) -> list[str]:
        return [s.name for s in self.sensors]

    @property
    def required(self) -> frozenset[str]:
        return frozenset(s.name for s in self.sensors if s.required)

    @property
    def informative(self) -> list[str]:
        return [s.name for s in self.sensors if s.informative]

    @property
    def feature_spec(self) -> FeatureSpec:
        if self.features is None:
            return FeatureSpec(tuple(self.informative))
        return self.features

    def sensor(self, name: str) -> Sensor:
        for s in self.sensors:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True)
class FleetSchema:
    machine_types: dict[str, MachineType] = field(default_factory=dict)

    def type_of(self, name: str) -> MachineType:
        return self.machine_types[name]

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
        """The spec one fleet-wide model is trained with: the machine type's own when there is one
        type, else the default windows over every informative sensor."""
        if len(self.machine_types) == 1:
            return next(iter(self.machine_types.values())).feature_spec
        return FeatureSpec(tuple(self.informative))


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    return head, int(name[len(head) :] or -1)


def _s(name: str, unit: str, low: float, high: float, description: str, informative: bool = True) -> Sensor:
    return Sensor(name, unit, low, high, description, informative=informative)


# C-MAPSS turbofan (FD001 operating regime and beyond). Ranges are physical plausibility bounds,
# wide enough for all four C-MAPSS subsets; constant channels in FD001 are not informative.
TURBOFAN = MachineType(
    name="turbofan",
    time_unit="cycles",
    description="NASA C-MAPSS simulated turbofan engine",
    sensors=(
        _s("setting1", "", -0.1, 50.0, "operational setting 1 (altitude, kft)", informative=False),
        _s("setting2", "", -0.01, 1.0, "operational setting 2 (Mach number)", informative=False),
        _s(
            "setting3",
            "",
            0.0,
            120.0,
            "operational setting 3 (throttle resolver angle)",
            informative=False,
        ),
        _s("s1", "°R", 400, 700, "total temperature at fan inlet", informative=False),
        _s("s2", "°R", 500, 700, "total temperature at LPC outlet"),
        _s("s3", "°R", 1200, 1700, "total temperature at HPC outlet"),
        _s("s4", "°R", 1000, 1500, "total temperature at LPT outlet"),
        _s("s5", "psia", 0, 20, "pressure at fan inlet", informative=False),
        _s("s6", "psia", 0, 30, "total pressure in bypass duct", informative=False),
        _s("s7", "psia", 100, 700, "total pressure at HPC outlet"),
        _s("s8", "rpm", 1500, 2500, "physical fan speed"),
        _s("s9", "rpm", 7000, 10000, "physical core speed"),
        _s("s10", "", 0, 2, "engine pressure ratio", informative=False),
        _s("s11", "psia", 30, 60, "static pressure at HPC outlet"),
        _s("s12", "pps/psi", 100, 700, "ratio of fuel flow to Ps30"),
        _s("s13", "rpm", 1500, 2500, "corrected fan speed"),
        _s("s14", "rpm", 7000, 9500, "corrected core speed"),
        _s("s15", "", 5, 15, "bypass ratio"),
        _s("s16", "", 0, 0.1, "burner fuel-air ratio", informative=False),
        _s("s17", "", 250, 450, "bleed enthalpy"),
        _s("s18", "rpm", 1500, 2500, "demanded fan speed", informative=False),
        _s("s19", "", 50, 120, "demanded corrected fan speed", informative=False),
        _s("s20", "lbm/s", 5, 50, "HPT coolant bleed"),
        _s("s21", "lbm/s", 3, 30, "LPT coolant bleed"),
    ),
)
# Every informative sensor: window means and slopes from the last 10 readings to the last 150
# (an engine degrades over a hundred cycles or more, and its sensors are noisy), and the drift from
# its own baseline. Chosen by grouped cross-validation on FD001, scored the way its test set is
# (every held-out engine cut at each cycle with true RUL <= 145): RMSE 11.1 against 12.4 for
# windows 10 and 30 with mean, std and slope; std and EWMAs added nothing. The operating settings
# define regimes for subsets that run in several (set regime_count, e.g. 6 for C-MAPSS FD002/FD004).
TURBOFAN = replace(
    TURBOFAN,
    features=FeatureSpec(
        tuple(TURBOFAN.informative),
        windows=(10, 30, 60, 100, 150),
        stats=("mean", "slope"),
        ewma_alphas=(),
        regime_settings=("setting1", "setting2", "setting3"),
        regime_count=0,
    ),
)


def default_fleet() -> FleetSchema:
    return FleetSchema({TURBOFAN.name: TURBOFAN})
