"""Why a machine is at risk, and what to do about it: per-prediction contributions, summed per
sensor, mapped to a suspected component and its recommended procedure."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pitstop.errors import ConfigError
from pitstop.registry import ModelBundle
from pitstop.schema import FleetSchema


@dataclass(frozen=True)
class Component:
    name: str
    sensors: tuple[str, ...]
    procedures: dict[str, str]  # by priority
    manual: str = ""


@dataclass(frozen=True)
class Explanation:
    top_sensors: list[dict[str, float | str]]  # sensor, contribution (RUL units; negative: shortens it)
    component: str | None
    procedure: str | None
    manual: str | None
    # the model's probability that the coming failure is in ``component`` (None: suspected from
    # the sensors that pushed the RUL down, for a model without a component classifier)
    component_probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "top_sensors": self.top_sensors,
            "component": self.component,
            "component_probability": self.component_probability,
            "procedure": self.procedure,
            "manual": self.manual,
        }


class ComponentMap:
    """Machine type -> components, each with the sensors that show its wear and its procedures."""

    def __init__(self, types: dict[str, list[Component]]) -> None:
        self.types = types

    @classmethod
    def load(cls, path: Path) -> ComponentMap:
        """The mapping from ``path`` (TOML, the ``component_map`` setting): it replaces the
        components of the fleet file."""
        try:
            text = Path(path).read_text()
            raw = tomllib.loads(text)
            types = {
                machine_type: [
                    Component(c["name"], tuple(c["sensors"]), dict(c["procedures"]), str(c.get("manual", "")))
                    for c in body.get("components", [])
                ]
                for machine_type, body in raw.items()
            }
        except FileNotFoundError:
            raise ConfigError(
                f"component map {path} does not exist: check the component_map setting"
            ) from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"component map {path or 'shipped'} is not valid: {exc!r} (each component needs "
                "name, sensors and procedures)"
            ) from None
        return cls(types)

    @classmethod
    def from_fleet(cls, fleet: FleetSchema) -> ComponentMap:
        """Each machine type's components as its fleet file declares them."""
        return cls(
            {
                name: [Component(c.name, c.sensors, dict(c.procedures), c.manual) for c in mt.components]
                for name, mt in fleet.machine_types.items()
            }
        )

    def explain(
        self, bundle: ModelBundle, row: np.ndarray, machine_type: str, priority: str, top: int = 3
    ) -> Explanation:
        """The ``top`` sensors that pushed this prediction down the most; the component most likely
        to fail (from the model's component classifier, learned from failures that named their
        component; else the component whose sensors pushed the prediction down the most); and that
        component's procedure for ``priority``."""
        per_feature = bundle.contributions(row.reshape(1, -1))[0]
        by_sensor: dict[str, float] = {}
        for name, value in zip(bundle.feature_names, per_feature, strict=True):
            sensor = name.split("__", 1)[0]
            by_sensor[sensor] = by_sensor.get(sensor, 0.0) + float(value)
        ranked = sorted(by_sensor.items(), key=lambda kv: kv[1])
        top_sensors: list[dict[str, float | str]] = [
            {"sensor": s, "contribution": round(v, 3)} for s, v in ranked[:top] if v < 0
        ]
        components = self.types.get(machine_type, [])
        likely = bundle.likely_component(row.reshape(1, -1))
        if likely is not None:
            name, probability = likely[0]
            found = next((c for c in components if c.name == name), None)
            procedure = _procedure(found, priority) if found is not None else None
            manual = (found.manual or None) if found is not None else None
            return Explanation(top_sensors, name, procedure, manual, round(probability, 3))
        scored = [(sum(min(by_sensor.get(s, 0.0), 0.0) for s in c.sensors), c) for c in components]
        scored = [(v, c) for v, c in scored if v < 0]
        if not scored:
            return Explanation(top_sensors, None, None, None)
        _, component = min(scored, key=lambda vc: vc[0])
        return Explanation(
            top_sensors, component.name, _procedure(component, priority), component.manual or None
        )


def _procedure(component: Component, priority: str) -> str | None:
    """The component's procedure for a priority, else its default, else any it has."""
    procedures = component.procedures
    return procedures.get(priority) or procedures.get("default") or next(iter(procedures.values()), None)
