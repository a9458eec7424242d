from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class FeatureSpec:
    """What features are computed from a machine's readings, in order of its ``seq``.

    For each sensor: the last value, rolling means over ``mean_windows`` readings, rolling
    (population) standard deviations over ``std_windows`` readings, and ``drift``: the rolling mean
    over ``drift_window`` minus the machine's baseline, the mean of its first ``baseline_readings``
    readings (of those seen so far while fewer). Plus ``age``: readings seen for the machine.
    Windows cover the readings available so far (at least one).
    """

    sensors: tuple[str, ...]
    mean_windows: tuple[int, ...] = (5, 20)
    std_windows: tuple[int, ...] = (20,)
    drift_window: int = 20
    baseline_readings: int = 10
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        windows = (*self.mean_windows, *self.std_windows, self.drift_window, self.baseline_readings)
        if not self.sensors:
            raise ValueError("a feature spec needs at least one sensor")
        if any(w < 1 for w in windows):
            raise ValueError("feature windows must be at least one reading")

    @property
    def max_window(self) -> int:
        return max(*self.mean_windows, *self.std_windows, self.drift_window)

    @property
    def names(self) -> list[str]:
        out = ["age"]
        for s in self.sensors:
            out.append(f"{s}__last")
            out += [f"{s}__mean_{w}" for w in self.mean_windows]
            out += [f"{s}__std_{w}" for w in self.std_windows]
            out.append(f"{s}__drift")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        data = dict(data)
        for key in ("sensors", "mean_windows", "std_windows"):
            data[key] = tuple(data[key])
        return cls(**data)

    @property
    def hash(self) -> str:
        """Stable across processes and Python versions: sha256 of the canonical JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
