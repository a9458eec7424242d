"""Sensor consistency in a live window: machines whose sensor disagrees with their other sensors.

Per sensor of the baseline (``baseline.py``), each machine's median consistency z over its rows
in the window; a machine beyond ``Z_LIMIT`` is *inconsistent* on that sensor. Training machines
are inconsistent at a rate ``p0`` per sensor, so the number of inconsistent machines among the
``n`` checked is judged by the binomial tail ``P(K ≥ k | n, p0)``, corrected across sensors: a
significant count of at least two machines is a fleet-level fault on that sensor (a bad batch of
sensors, a calibration gone wrong, a firmware change), and the machines are named.

One machine alone is never significant at fleet scale; it is named in the report, and the monitor
alerts on it when it stays inconsistent over several windows (a miscalibrated or swapped sensor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binom

from pitstop.monitoring.baseline import Z_LIMIT, consistency_z


@dataclass(frozen=True)
class SensorCheck:
    sensor: str
    machines: int  # machines checked in the window
    inconsistent: dict[str, float] = field(default_factory=dict)  # machine -> its median z
    p_value: float = 1.0
    p_adjusted: float = 1.0
    drifted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "machines": self.machines,
            "inconsistent": {m: round(z, 2) for m, z in sorted(self.inconsistent.items())},
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "drifted": self.drifted,
        }


def check_consistency(
    baseline: dict[str, Any],
    names: list[str],
    rows: np.ndarray,
    machine_ids: np.ndarray,
    *,
    alpha: float = 0.05,
    correction: str = "holm",
) -> list[SensorCheck]:
    """Each baseline sensor's consistency over a window of ``rows`` (× ``names``) of ``machine_ids``."""
    from pitstop.monitoring.drift import adjust  # drift imports the baseline; keep the graph acyclic

    sensors = baseline.get("sensors", {})
    if not sensors or len(rows) == 0:
        return []
    order = np.argsort(machine_ids, kind="stable")
    ids, starts, group = np.unique(machine_ids[order], return_index=True, return_inverse=True)
    grouped = rows[order]
    checks: list[tuple[str, dict[str, float], float]] = []
    for sensor, model in sensors.items():
        medians = group_medians(consistency_z(model, grouped, names), group, starts)
        seen = np.isfinite(medians)
        bad = seen & (np.abs(medians) > Z_LIMIT)
        k, n = int(bad.sum()), int(seen.sum())
        p = float(binom.sf(k - 1, n, model["p0"])) if k >= 2 else 1.0
        checks.append((sensor, {str(m): float(v) for m, v in zip(ids[bad], medians[bad], strict=True)}, p))
    adjusted = adjust(np.array([p for _, _, p in checks]), correction)
    machines = len(ids)
    return [
        SensorCheck(sensor, machines, flagged, p, float(a), bool(a < alpha))
        for (sensor, flagged, p), a in zip(checks, adjusted, strict=True)
    ]


def group_medians(values: np.ndarray, group: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each group's ``np.nanmedian`` (NaN for a group without a finite value), for rows grouped
    in order: ``group`` is each row's group number (0, 1, … ascending), ``starts`` each group's
    first row. One sort for all groups instead of a median call per machine."""
    v = values[np.lexsort((values, group))]  # by group, then value; NaN last within its group
    counts = np.add.reduceat(~np.isnan(v), starts)
    finite = np.add.reduceat(np.isfinite(v), starts) > 0
    lo = starts + np.maximum(counts - 1, 0) // 2
    hi = starts + counts // 2
    a, b = v[lo], v[hi]
    with np.errstate(invalid="ignore", over="ignore"):
        middle = np.where(lo == hi, a, (a + b) / 2)
    return np.where(finite, middle, np.nan)
