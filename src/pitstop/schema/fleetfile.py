"""Fleet files: machine types declared in TOML, checked field by field.

Every problem is collected (not just the first) and named by machine type and field, e.g.
``pump.sensors[2].high: must be above low (0)``. The format is in the README ("Bring your own
fleet"); ``pitstop/fleets/*.toml`` are the shipped examples.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pitstop.errors import PitstopError
from pitstop.features.spec import STATS, FeatureSpec, parse_duration
from pitstop.schema.fleet import SENSOR_ROLES, TIME_UNITS, Component, FleetSchema, MachineType, Sensor

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_SENSOR = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_RESERVED = frozenset(
    {
        "machine_id",
        "ts",
        "seq",
        "day",
        "bus_position",
        "reason",
        "quarantine",
        "received",
        "age",
        "machine_type",
    }
)
_TYPE_KEYS = {
    "time_unit",
    "description",
    "sensors",
    "components",
    "features",
    "rul_cap",
    "interval_horizon",
    "failure_horizon",
    "policy",
    "manuals",
}
_SENSOR_KEYS = {"name", "unit", "low", "high", "description", "role", "required", "informative"}
_COMPONENT_KEYS = {"name", "description", "sensors", "procedure", "procedures", "manual"}
_FEATURE_KEYS = {
    "sensors",
    "windows",
    "stats",
    "ewma_alphas",
    "delta",
    "drift_window",
    "baseline_readings",
    "time_since_reset",
    "reset_events",
    "regimes",
    "duration_max_readings",
}
_POLICY_KEYS = {"lead_time", "threshold", "hysteresis", "recheck_after"}
_PRIORITIES = ("normal", "high", "urgent", "default")


class FleetError(PitstopError):
    """A fleet file that cannot be used; ``details`` lists each problem by type and field."""

    code = "invalid_fleet"
    status = 422


@dataclass(frozen=True)
class Problem:
    machine_type: str
    field: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"machine_type": self.machine_type, "field": self.field, "problem": self.problem}

    def __str__(self) -> str:
        where = f"{self.machine_type}.{self.field}" if self.field else self.machine_type
        return f"{where}: {self.problem}"


def shipped_fleet(name: str) -> FleetSchema:
    """A fleet file shipped in the package (``turbofan``, ``harvesters``)."""
    text = (resources.files("pitstop.fleets") / f"{name}.toml").read_text()
    return parse_fleet(text, f"shipped fleet {name}")


def shipped_fleet_path(name: str) -> Path:
    return Path(str(resources.files("pitstop.fleets") / f"{name}.toml"))


def load_fleet_file(path: Path) -> FleetSchema:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise FleetError(f"fleet file {path} does not exist", code="fleet_not_found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"cannot read fleet file {path}: {exc}") from None
    return parse_fleet(text, str(path))


def parse_fleet(text: str, source: str = "fleet file") -> FleetSchema:
    """The fleet in ``text`` (TOML), or a ``FleetError`` listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{source} is not valid TOML: {exc}", code="invalid_fleet_toml") from None
    problems: list[Problem] = []
    unknown = sorted(set(raw) - {"machine_types"})
    if unknown:
        problems.append(
            Problem("(file)", ", ".join(unknown), "unknown top-level keys; use [machine_types.NAME]")
        )
    types_raw = raw.get("machine_types")
    if not isinstance(types_raw, dict) or not types_raw:
        problems.append(Problem("(file)", "machine_types", "declare at least one [machine_types.NAME] table"))
        _raise(problems, source)
        return FleetSchema()
    types: dict[str, MachineType] = {}
    for name, body in types_raw.items():
        parsed = _machine_type(name, body, problems)
        if parsed is not None:
            types[name] = parsed
    _raise(problems, source)
    return FleetSchema(types, source=text)


def _raise(problems: list[Problem], source: str) -> None:
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise FleetError(
            f"{source} has {len(problems)} problem(s):\n{lines}", details=[p.to_dict() for p in problems]
        )


def _machine_type(name: str, body: Any, problems: list[Problem]) -> MachineType | None:
    def bad(field: str, problem: str) -> None:
        problems.append(Problem(name, field, problem))

    before = len(problems)
    if not _NAME.match(name):
        bad(
            "", "a machine type name is lower case letters, digits and _ (at most 48), starting with a letter"
        )
    if not isinstance(body, dict):
        bad("", "must be a table")
        return None
    for key in sorted(set(body) - _TYPE_KEYS):
        bad(key, f"unknown field; known: {', '.join(sorted(_TYPE_KEYS))}")
    time_unit = body.get("time_unit")
    if time_unit not in TIME_UNITS:
        bad("time_unit", f"must be one of {', '.join(TIME_UNITS)} (got {time_unit!r})")
    description = _text(body, "description", bad)
    sensors = _sensors(body.get("sensors"), bad)
    names = [s.name for s in sensors]
    components = _components(body.get("components", []), set(names), bad)
    numbers = {}
    for key in ("rul_cap", "interval_horizon", "failure_horizon"):
        if key in body:
            numbers[key] = _positive(body[key], key, bad)
    policy = _policy(body.get("policy", {}), bad)
    manuals = body.get("manuals", [])
    if not isinstance(manuals, list) or not all(isinstance(m, str) and m for m in manuals):
        bad("manuals", "must be a list of file paths (Markdown or PDF, relative to the fleet file)")
        manuals = []
    features, regimes = _features(body.get("features", {}), sensors, time_unit, bad)
    if len(problems) > before:
        return None
    return MachineType(
        name=name,
        time_unit=str(time_unit),
        sensors=tuple(sensors),
        description=description,
        features=features,
        components=tuple(components),
        rul_cap=numbers.get("rul_cap"),
        interval_horizon=numbers.get("interval_horizon"),
        failure_horizon=numbers.get("failure_horizon"),
        policy=policy,
        manuals=tuple(manuals),
        regimes=regimes,
    )


def _text(body: dict[str, Any], key: str, bad: Any, default: str = "") -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        bad(key, "must be a string")
        return default
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _positive(value: Any, field: str, bad: Any) -> float:
    number = _number(value)
    if number is None or number <= 0:
        bad(field, f"must be a positive number (got {value!r})")
        return 1.0
    return number


def _sensors(raw: Any, bad: Any) -> list[Sensor]:
    if not isinstance(raw, list) or not raw:
        bad("sensors", "declare at least one [[machine_types.NAME.sensors]] entry")
        return []
    out: list[Sensor] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"sensors[{i}]"
        if not isinstance(entry, dict):
            bad(where, "must be a table")
            continue
        name = entry.get("name")
        if isinstance(name, str):
            where = f"sensors[{i}] ({name})"
        for key in sorted(set(entry) - _SENSOR_KEYS):
            bad(f"{where}.{key}", f"unknown field; known: {', '.join(sorted(_SENSOR_KEYS))}")
        if not isinstance(name, str) or not _SENSOR.match(name) or name in _RESERVED:
            bad(
                f"{where}.name", "a sensor name is letters, digits and _ starting with a letter, not reserved"
            )
            continue
        if name in seen:
            bad(f"{where}.name", "declared twice")
            continue
        seen.add(name)
        low, high = _number(entry.get("low")), _number(entry.get("high"))
        if low is None:
            bad(f"{where}.low", f"must be a finite number (got {entry.get('low')!r})")
        if high is None:
            bad(f"{where}.high", f"must be a finite number (got {entry.get('high')!r})")
        if low is not None and high is not None and high <= low:
            bad(f"{where}.high", f"must be above low ({low:g})")
        role = entry.get("role", "sensor")
        if role not in SENSOR_ROLES:
            bad(f"{where}.role", f"must be one of {', '.join(SENSOR_ROLES)} (got {role!r})")
        flags = {}
        for key in ("required", "informative"):
            value = entry.get(key, True)
            if not isinstance(value, bool):
                bad(f"{where}.{key}", "must be true or false")
            flags[key] = bool(value)
        unit, description = entry.get("unit", ""), entry.get("description", "")
        if not isinstance(unit, str) or not isinstance(description, str):
            bad(where, "unit and description must be strings")
            continue
        out.append(
            Sensor(
                name,
                unit,
                low if low is not None else 0.0,
                high if high is not None else 1.0,
                description,
                required=flags["required"],
                informative=flags["informative"],
                role=str(role),
            )
        )
    return out


def _components(raw: Any, sensors: set[str], bad: Any) -> list[Component]:
    if not isinstance(raw, list):
        bad("components", "must be a list of [[machine_types.NAME.components]] tables")
        return []
    out: list[Component] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"components[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            bad(f"{where}.name", "each component needs a name")
            continue
        name = entry["name"]
        where = f"components[{i}] ({name})"
        for key in sorted(set(entry) - _COMPONENT_KEYS):
            bad(f"{where}.{key}", f"unknown field; known: {', '.join(sorted(_COMPONENT_KEYS))}")
        if name in seen:
            bad(f"{where}.name", "declared twice")
        seen.add(name)
        listed = entry.get("sensors", [])
        if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
            bad(f"{where}.sensors", "must be a list of sensor names")
            listed = []
        for s in sorted(set(listed) - sensors):
            bad(f"{where}.sensors", f"{s!r} is not a sensor of this type")
        procedures = entry.get("procedures", {})
        if not isinstance(procedures, dict) or not all(isinstance(v, str) for v in procedures.values()):
            bad(f"{where}.procedures", 'must be a table of priority = "procedure"')
            procedures = {}
        for key in sorted(set(procedures) - set(_PRIORITIES)):
            bad(f"{where}.procedures.{key}", f"unknown priority; known: {', '.join(_PRIORITIES)}")
        procedure = entry.get("procedure")
        if procedure is not None:
            if not isinstance(procedure, str):
                bad(f"{where}.procedure", "must be a string")
            else:
                procedures = {"default": procedure, **procedures}
        out.append(
            Component(
                name,
                str(entry.get("description", "")),
                tuple(listed),
                dict(procedures),
                str(entry.get("manual", "")),
            )
        )
    return out


def _policy(raw: Any, bad: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        bad("policy", "must be a table (lead_time, threshold, hysteresis, recheck_after)")
        return {}
    out = {}
    for key, value in raw.items():
        if key not in _POLICY_KEYS:
            bad(f"policy.{key}", f"unknown field; known: {', '.join(sorted(_POLICY_KEYS))}")
            continue
        number = _number(value)
        if number is None or number < 0:
            bad(f"policy.{key}", f"must be a number at least 0 (got {value!r})")
            continue
        out[key] = number
    if "threshold" in out and "lead_time" in out and out["threshold"] < out["lead_time"]:
        bad("policy.threshold", f"is below lead_time ({out['lead_time']:g}): orders would open too late")
    return out


def _features(
    raw: Any, sensors: list[Sensor], time_unit: Any, bad: Any
) -> tuple[FeatureSpec | None, int | str]:
    if not isinstance(raw, dict):
        bad("features", "must be a table")
        return None, "auto"
    for key in sorted(set(raw) - _FEATURE_KEYS):
        bad(f"features.{key}", f"unknown field; known: {', '.join(sorted(_FEATURE_KEYS))}")
    regimes = raw.get("regimes", "auto")
    if regimes != "auto" and (isinstance(regimes, bool) or not isinstance(regimes, int) or regimes < 0):
        bad("features.regimes", f'must be "auto" or a count of operating regimes (got {regimes!r})')
        regimes = "auto"
    if not raw or set(raw) == {"regimes"}:
        return None, regimes
    names = {s.name for s in sensors}
    settings = tuple(s.name for s in sensors if s.role == "setting")
    default_sensors = [s.name for s in sensors if s.informative and s.role != "setting"]
    chosen = raw.get("sensors", default_sensors)
    if not isinstance(chosen, list) or not chosen or not all(isinstance(s, str) for s in chosen):
        bad("features.sensors", "must be a non-empty list of sensor names")
        return None, regimes
    for s in sorted(set(chosen) - names):
        bad("features.sensors", f"{s!r} is not a sensor of this type")
    for s in sorted(set(chosen) & set(settings)):
        bad("features.sensors", f"{s!r} is a setting (an operating condition), used for regimes")
    windows = raw.get("windows", [5, 10, 30, 60])
    counts: list[int] = []
    durations: list[str] = []
    if not isinstance(windows, list) or not windows:
        bad("features.windows", "must be a non-empty list")
    else:
        for w in windows:
            if isinstance(w, str):
                try:
                    label = parse_duration(w)[0]
                except ValueError as exc:
                    bad("features.windows", str(exc))
                    continue
                if label in durations:
                    bad("features.windows", f"duration {w!r} is given twice")
                durations.append(label)
            elif isinstance(w, bool) or not isinstance(w, int) or w < 1:
                bad(
                    "features.windows",
                    f'a window is a count of readings (at least 1) or a duration ("24h"); got {w!r}',
                )
            else:
                counts.append(w)
    stats = raw.get("stats", ["mean", "std", "slope"])
    if not isinstance(stats, list) or not stats or not set(stats) <= set(STATS):
        bad("features.stats", f"must be a list of {', '.join(STATS)}")
        stats = ["mean"]
    most = raw.get("duration_max_readings", 128)
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        bad("features.duration_max_readings", f"must be a count of readings, at least 1 (got {most!r})")
        most = 128
    alphas = raw.get("ewma_alphas", [])
    if not isinstance(alphas, list) or not all(_number(a) is not None for a in alphas):
        bad("features.ewma_alphas", "must be a list of numbers in (0, 1]")
        alphas = []
    for key in ("delta", "time_since_reset"):
        if key in raw and not isinstance(raw[key], bool):
            bad(f"features.{key}", "must be true or false")
    resets = raw.get("reset_events", ["maintenance", "failure"])
    if not isinstance(resets, list) or not set(resets) <= {"maintenance", "failure", "inspection"}:
        bad("features.reset_events", "must be a list of event kinds: maintenance, failure, inspection")
        resets = ["maintenance", "failure"]
    for key in ("drift_window", "baseline_readings"):
        value = raw.get(key, 10)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            bad(f"features.{key}", f"must be a count of readings, at least 1 (got {value!r})")
    spec_args: dict[str, Any] = {
        "windows": tuple(counts),
        "durations": tuple(durations),
        "duration_max_readings": most,
        "stats": tuple(stats),
        "ewma_alphas": tuple(float(a) for a in alphas),
        "delta": raw.get("delta", True),
        "drift_window": raw.get("drift_window", 10),
        "baseline_readings": raw.get("baseline_readings", 10),
        "hours_since_reset": raw.get("time_since_reset", TIME_UNITS.get(str(time_unit)) is not None),
        "reset_events": tuple(resets),
        "regime_settings": settings,
        "regime_count": regimes if isinstance(regimes, int) else 0,
    }
    try:
        return FeatureSpec(tuple(chosen), **spec_args), regimes
    except (ValueError, TypeError) as exc:
        bad("features", str(exc))
        return None, regimes
