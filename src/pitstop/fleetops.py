"""The fleet in force in a deployment: stored in the ops DB (one row per applied version), applied
with checks against the data already held, and the lake evolved to match.

Applying a fleet file may add machine types, sensors, components and change options. It refuses
what would lose or misread data: removing a sensor that has values in the lake for machines of its
type, removing a machine type with registered machines, or changing the time unit of a type that
has machines (its labels, models and policies are in the old unit).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import select

from pitstop.schema import FleetSchema, parse_fleet
from pitstop.schema.fleetfile import FleetError, Problem
from pitstop.store import Database, FleetVersion, Machine, utcnow

if TYPE_CHECKING:
    from pitstop.config import Settings
    from pitstop.lake import Lake


@dataclass
class FleetChange:
    added_types: list[str] = field(default_factory=list)
    removed_types: list[str] = field(default_factory=list)
    added_sensors: dict[str, list[str]] = field(default_factory=dict)
    removed_sensors: dict[str, list[str]] = field(default_factory=dict)
    changed_types: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.added_types
            or self.removed_types
            or self.added_sensors
            or self.removed_sensors
            or self.changed_types
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "added_types": self.added_types,
            "removed_types": self.removed_types,
            "added_sensors": self.added_sensors,
            "removed_sensors": self.removed_sensors,
            "changed_types": self.changed_types,
        }


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def stored_fleet(db: Database) -> tuple[FleetSchema, int] | None:
    """The newest applied fleet and its version, or None when none was ever applied."""
    with db.session() as s:
        row = s.scalars(select(FleetVersion).order_by(FleetVersion.version.desc()).limit(1)).first()
        if row is None:
            return None
        source, version = row.source, row.version
    return parse_fleet(source, f"stored fleet version {version}"), version


def fleet_history(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        return [
            {
                "version": r.version,
                "sha256": r.sha256,
                "origin": r.origin,
                "actor": r.actor,
                "created_at": r.created_at.isoformat(),
            }
            for r in s.scalars(select(FleetVersion).order_by(FleetVersion.version.desc()))
        ]


def diff(old: FleetSchema, new: FleetSchema) -> FleetChange:
    change = FleetChange()
    for name, mt in new.machine_types.items():
        before = old.machine_types.get(name)
        if before is None:
            change.added_types.append(name)
            continue
        added = [s for s in mt.sensor_names if s not in before.sensor_names]
        removed = [s for s in before.sensor_names if s not in mt.sensor_names]
        if added:
            change.added_sensors[name] = added
        if removed:
            change.removed_sensors[name] = removed
        if before != mt:
            change.changed_types.append(name)
    change.removed_types = [n for n in old.machine_types if n not in new.machine_types]
    return change


def check_change(old: FleetSchema, new: FleetSchema, db: Database, lake: Lake) -> FleetChange:
    """The change from ``old`` to ``new``, or a ``FleetError`` naming what it would break."""
    change = diff(old, new)
    problems: list[Problem] = []
    machines = _machines_by_type(db)
    for name in change.removed_types:
        if machines.get(name):
            problems.append(
                Problem(
                    name,
                    "",
                    f"cannot remove a machine type with {len(machines[name])} registered machine(s); "
                    "retire them or keep the type",
                )
            )
    for name, mt in new.machine_types.items():
        before = old.machine_types.get(name)
        if before is not None and before.time_unit != mt.time_unit and machines.get(name):
            problems.append(
                Problem(
                    name,
                    "time_unit",
                    f"cannot change from {before.time_unit!r} to {mt.time_unit!r}: the type has machines, "
                    "and its labels, models and policies are in the old unit; declare a new type instead",
                )
            )
    for name, removed in change.removed_sensors.items():
        ids = machines.get(name, [])
        for sensor in removed:
            held = _values_held(lake, sensor, ids)
            if held:
                problems.append(
                    Problem(
                        name,
                        f"sensors ({sensor})",
                        f"cannot remove a sensor with data: the lake holds {held:,} value(s) of it for "
                        f"machines of this type; keep it (mark it required = false if it is no longer sent)",
                    )
                )
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise FleetError(
            f"the fleet change is refused:\n{lines}",
            code="fleet_change_refused",
            details=[p.to_dict() for p in problems],
        )
    return change


def check_policies(fleet: FleetSchema, settings: Settings) -> None:
    """Every type's risk policy as the platform will build it (the deployment's settings, the fleet
    file's policy, the type's time unit): a ``FleetError`` naming the type when one cannot be."""
    from pitstop.errors import ConfigError
    from pitstop.maintenance import RiskPolicy

    problems = []
    for name, mt in fleet.machine_types.items():
        try:
            RiskPolicy.from_settings(settings, name, mt.policy, mt.unit_seconds)
        except ConfigError as exc:
            problems.append(
                Problem(name, "policy", f"{exc.message} (set lead_time and threshold in [policy])")
            )
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise FleetError(
            f"the fleet's risk policies are not valid:\n{lines}", details=[p.to_dict() for p in problems]
        )


def apply_to_data_dir(settings: Settings, new: FleetSchema, *, origin: str, actor: str) -> dict[str, Any]:
    """``apply_fleet`` on the data dir of ``settings`` (a new one starts with this fleet's tables),
    its risk policies checked first: a policy the platform cannot build would stop every start."""
    from pitstop.lake import LakeLocation
    from pitstop.platform import Platform

    check_policies(new, settings)
    fresh = not LakeLocation.from_settings(settings).exists()
    platform = Platform.open(settings, fleet=new if fresh else None)
    try:
        return apply_fleet(platform.db, platform.lake, platform.fleet, new, origin=origin, actor=actor)
    finally:
        platform.close()


def apply_fleet(
    db: Database, lake: Lake, current: FleetSchema, new: FleetSchema, *, origin: str, actor: str = "cli"
) -> dict[str, Any]:
    """Check ``new`` against ``current`` and the data, evolve the lake, store it as the next version
    (unless it is the same text as the newest) and audit. Returns what happened."""
    change = check_change(current, new, db, lake)
    added_columns = lake.add_sensors(new.sensors)
    stored = stored_fleet(db)
    digest = sha256(new.source)
    if stored is not None and sha256(stored[0].source) == digest:
        return {"version": stored[1], "unchanged": True, "change": change.to_dict(), "lake_columns": []}
    with db.session() as s:
        row = FleetVersion(sha256=digest, source=new.source, origin=origin, actor=actor, created_at=utcnow())
        s.add(row)
        s.flush()
        version = row.version
    db.audit(
        actor,
        "fleet_applied",
        version=version,
        origin=origin,
        sha256=digest,
        types=sorted(new.machine_types),
        lake_columns=added_columns,
        **change.to_dict(),
    )
    return {"version": version, "unchanged": False, "change": change.to_dict(), "lake_columns": added_columns}


def _machines_by_type(db: Database) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with db.session() as s:
        for machine_id, machine_type in s.execute(select(Machine.machine_id, Machine.machine_type)):
            out.setdefault(machine_type, []).append(machine_id)
    return out


def _values_held(lake: Lake, sensor: str, machine_ids: list[str]) -> int:
    """Non-null values of ``sensor`` the lake holds for ``machine_ids`` (clean and quarantined)."""
    if not machine_ids:
        return 0
    total = 0
    for table in ("telemetry", "quarantine"):
        if sensor not in lake.columns(table):
            continue
        frame = lake.read(table, columns=[sensor], machine_ids=machine_ids)
        total += int(frame.select(pl.col(sensor).is_not_null().sum()).item() or 0)
    return total


def manual_files(fleet: FleetSchema, base_dir: Path) -> dict[str, Path]:
    """The manuals (Markdown or PDF) the fleet file names, found next to it (paths relative to
    its folder), by file name; manuals shipped with Pitstop are found already. A ``FleetError``
    names any manual that is missing, of another format, empty or unreadable."""
    from importlib import resources

    from pitstop.assistant.manuals import FORMATS, read_sections
    from pitstop.errors import ManualError

    shipped = {ref.name for ref in resources.files("pitstop.knowledge").iterdir()}
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for name, mt in fleet.machine_types.items():
        for manual in mt.manuals:
            path = (base_dir / manual).resolve()
            if not path.is_file() and Path(manual).name in shipped:
                continue  # shipped with Pitstop: the assistant searches it already
            if path.suffix.lower() not in FORMATS:
                problems.append(
                    Problem(
                        name,
                        f"manuals ({manual})",
                        "only Markdown (.md, .markdown) and PDF (.pdf) manuals are searched",
                    )
                )
            elif not path.is_file():
                problems.append(
                    Problem(name, f"manuals ({manual})", f"no such file next to the fleet file ({path})")
                )
            else:
                try:
                    read_sections(path.name, path.read_bytes())
                except ManualError as exc:
                    problems.append(Problem(name, f"manuals ({manual})", f"{exc.message} [{exc.code}]"))
                    continue
                found[path.name] = path
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise FleetError(
            f"the fleet's manuals cannot be used:\n{lines}", details=[p.to_dict() for p in problems]
        )
    return found


def install_manuals(manuals: dict[str, Path], folder: Path) -> list[str]:
    """Copy the manuals where the assistant searches them (``<data-dir>/manuals``), each for the
    types whose ``manuals`` list names it. A manual an earlier fleet installed that this one no
    longer lists is deleted (noted in ``.fleet-manuals.json``): left there, it would be searched
    as a general manual, for every type."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / ".fleet-manuals.json"
    try:
        before = set(json.loads(manifest.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        before = set()
    for name, path in manuals.items():
        shutil.copyfile(path, folder / name)
    for name in sorted(before - set(manuals)):
        if Path(name).name == name:
            (folder / name).unlink(missing_ok=True)
    manifest.write_text(json.dumps(sorted(manuals)), encoding="utf-8")
    return sorted(manuals)
