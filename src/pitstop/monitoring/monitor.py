"""Live drift: windows of the feature rows the processor scores, checked against the serving
model's training baseline, for the fleet and per machine type.

Every ``window`` scored rows of a scope (the fleet, or one machine type) the window is checked
three ways (see ``baseline.py`` for why wear must not count as drift):

1. each feature's distribution against the training fleet *at the window's life stage*, and the
   prediction's against the training predictions *at the window's ages* (``drift_conditioned``):
   a fleet-wide shift (a new machine variant, a firmware change, a broken pipeline). A window is
   a few machines' histories, so a shift must hold for ``persist_windows`` windows in a row;
2. each sensor's consistency with the machine's other sensors (``check_consistency``): a fault on
   a share of the fleet, which a distribution test would average away. Significant at once;
3. each machine's consistency over consecutive windows: one machine whose sensor stays
   inconsistent for ``machine_windows`` windows (a miscalibrated or swapped sensor).

A sensor found by any of them raises an alert (``on_report``), once until it clears. A model
trained before baselines existed is checked the old way, against its whole training profile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitstop.monitoring.baseline import BASELINE
from pitstop.monitoring.consistency import SensorCheck, check_consistency
from pitstop.monitoring.drift import (
    PREDICTION,
    FeatureDrift,
    drift_conditioned,
    drift_from_profile,
    one_family,
)

log = logging.getLogger(__name__)

FLEET = "fleet"
TIME_FEATURES = frozenset({"age", "hours_since_reset"})


def sensor_of(feature: str) -> str:
    """The sensor a feature is computed from (``s3__mean_10`` → ``s3``); other features name themselves."""
    return feature.split("__", 1)[0]


@dataclass(frozen=True)
class Finding:
    """Why a sensor alerts: ``distribution`` (its features moved, fleet-wide), ``consistency``
    (it disagrees with the other sensors on a significant share of machines) or ``machine`` (one
    machine, ``machine_id``, for ``machine_windows`` windows in a row)."""

    sensor: str
    kind: str
    features: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()
    machine_id: str | None = None

    @property
    def key(self) -> str:
        return self.sensor if self.machine_id is None else f"{self.sensor}@{self.machine_id}"


@dataclass
class DriftReport:
    scope: str
    rows: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    consistency: list[SensorCheck] = field(default_factory=list)
    machines: int = 0
    method: str = "conditioned"  # or "whole_profile" (a model without a baseline)
    findings: dict[str, Finding] = field(default_factory=dict)  # alert key -> why

    @property
    def drifted_sensors(self) -> dict[str, list[str]]:
        """Sensors found drifting in this window (machine findings included), with the features
        (or, for consistency, the ``__last`` feature) that showed it."""
        out: dict[str, list[str]] = {}
        for finding in self.findings.values():
            names = out.setdefault(finding.sensor, [])
            names.extend(f for f in finding.features if f not in names)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "rows": self.rows,
            "machines": self.machines,
            "method": self.method,
            "drifted_sensors": self.drifted_sensors,
            "findings": [
                {
                    "sensor": f.sensor,
                    "kind": f.kind,
                    "features": list(f.features),
                    "machines": list(f.machines),
                    "machine_id": f.machine_id,
                }
                for f in self.findings.values()
            ],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "features": [f.to_dict() for f in self.features],
            "consistency": [c.to_dict() for c in self.consistency],
        }


@dataclass
class _Window:
    rows: list[np.ndarray] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)
    machines: list[str] = field(default_factory=list)


OnReport = Callable[[DriftReport, dict[str, Finding], dict[str, Finding]], None]  # report, raised, cleared


class DriftMonitor:
    """Collects scored rows into windows per scope and checks each full window."""

    def __init__(
        self,
        window: int = 500,
        alpha: float = 0.05,
        psi_threshold: float = 0.2,
        correction: str = "holm",
        on_report: OnReport | None = None,
        fleet_scope: bool = True,
        machine_windows: int = 3,
        persist_windows: int = 3,
    ) -> None:
        self.window = window
        # a fleet of several machine types has different features per type: type scopes only
        self.fleet_scope = fleet_scope
        self.alpha, self.psi_threshold, self.correction = alpha, psi_threshold, correction
        self.machine_windows, self.persist_windows = machine_windows, persist_windows
        self.on_report = on_report
        self._windows: dict[str, _Window] = {}
        self._alerting: dict[str, dict[str, Finding]] = {}  # scope -> alert key -> finding
        self._streaks: dict[
            str, dict[tuple[str, str], int]
        ] = {}  # scope -> (machine or "", sensor) -> windows
        self.latest: dict[str, DriftReport] = {}

    def observe(
        self,
        reference: dict[str, dict[str, Any]],
        names: list[str],
        rows: np.ndarray,
        predictions: np.ndarray,
        machine_types: list[str],
        machine_ids: list[str] | None = None,
    ) -> list[DriftReport]:
        """Add scored rows (with their predictions, machines' types and ids); returns the reports
        of the windows this filled."""
        if not reference or names[0] not in reference or "quantiles" not in reference[names[0]]:
            return []  # a model without a drift profile (trained before drift monitoring)
        ids = machine_ids if machine_ids is not None else [f"row-{i}" for i in range(len(rows))]
        reports = []
        fleet = [(FLEET, np.ones(len(rows), bool))] if self.fleet_scope else []
        for scope, mask in fleet + [
            (f"type:{t}", np.array([m == t for m in machine_types])) for t in sorted(set(machine_types))
        ]:
            if not mask.any():
                continue
            w = self._windows.setdefault(scope, _Window())
            w.rows.extend(rows[mask])
            w.predictions.extend(predictions[mask].tolist())
            w.machines.extend(m for m, keep in zip(ids, mask, strict=True) if keep)
            if len(w.rows) >= self.window:
                reports.append(
                    self._check(
                        scope,
                        reference,
                        names,
                        np.array(w.rows),
                        np.array(w.predictions),
                        np.array(w.machines),
                    )
                )
                self._windows[scope] = _Window()
        return reports

    def _check(
        self,
        scope: str,
        reference: dict[str, dict[str, Any]],
        names: list[str],
        rows: np.ndarray,
        predictions: np.ndarray,
        machines: np.ndarray,
    ) -> DriftReport:
        options: dict[str, Any] = {
            "alpha": self.alpha,
            "psi_threshold": self.psi_threshold,
            "correction": self.correction,
        }
        baseline = reference.get(BASELINE)
        count = len(np.unique(machines))
        if baseline and "age" in names:
            # what moves with time alone (age, hours since reset) is the condition, never drift
            watched = [j for j, n in enumerate(names) if n not in TIME_FEATURES]
            stage = np.nan_to_num(
                predictions, nan=float(np.nanmedian(predictions)) if np.isfinite(predictions).any() else 0.0
            )
            ages = rows[:, names.index("age")]
            features = drift_conditioned(
                baseline["stage"],
                [names[j] for j in watched],
                rows[:, watched],
                [stage, ages],
                count,
                **options,
            )
            prediction = drift_conditioned(
                baseline["age"],
                [PREDICTION],
                predictions.reshape(-1, 1),
                [ages],
                count,
                **options,
            )[0]
            *features, prediction = one_family([*features, prediction], **options)
            consistency = check_consistency(
                baseline, names, rows, machines, alpha=self.alpha, correction=self.correction
            )
            report = DriftReport(scope, len(rows), features, prediction, consistency, count)
        else:
            features = drift_from_profile(reference, names, rows, **options)
            prediction = None
            if PREDICTION in reference:
                prediction = drift_from_profile(
                    reference, [PREDICTION], predictions.reshape(-1, 1), **options
                )[0]
            report = DriftReport(
                scope, len(rows), features, prediction, machines=count, method="whole_profile"
            )
        report.findings.update(self._findings(scope, report, set(machines.tolist())))
        now = report.findings
        before = self._alerting.get(scope, {})
        raised = {k: f for k, f in now.items() if k not in before}
        cleared = {k: f for k, f in sorted(before.items()) if k not in now and self._cleared(f, machines)}
        self.latest[scope] = report
        if raised:
            log.warning("drift alert (%s): %s", scope, ", ".join(sorted(raised)))
        if self.on_report is not None:
            self.on_report(report, raised, cleared)  # first: an alert not recorded is raised again
        self._alerting[scope] = {**{k: f for k, f in before.items() if k not in cleared}, **now}
        return report

    def resume(self, scope: str, finding: Finding) -> None:
        """An alert raised before a restart: it clears like one raised here."""
        self._alerting.setdefault(scope, {})[finding.key] = finding

    def _findings(self, scope: str, report: DriftReport, present: set[str]) -> dict[str, Finding]:
        found: dict[str, Finding] = {}
        by_sensor: dict[str, list[str]] = {}
        for f in report.features:
            if f.drifted:
                by_sensor.setdefault(sensor_of(f.name), []).append(f.name)
        if report.prediction is not None and report.prediction.drifted:
            by_sensor[PREDICTION] = [PREDICTION]
        streaks = self._streaks.setdefault(scope, {})
        for pair in [p for p in streaks if p[0] == "" and p[1] not in by_sensor]:
            del streaks[pair]  # a fleet-wide shift must persist: a quiet window ends its streak
        for sensor, names in by_sensor.items():
            streaks[("", sensor)] = streaks.get(("", sensor), 0) + 1
            if streaks[("", sensor)] >= self.persist_windows:
                found[sensor] = Finding(sensor, "distribution", tuple(names))
        seen: set[tuple[str, str]] = set()
        for check in report.consistency:
            feature = f"{check.sensor}__last"
            if check.drifted:
                found.setdefault(check.sensor, Finding(check.sensor, "consistency", (feature,)))
                found[check.sensor] = Finding(
                    check.sensor,
                    found[check.sensor].kind,
                    tuple(dict.fromkeys([*found[check.sensor].features, feature])),
                    tuple(sorted(check.inconsistent)),
                )
            for machine in check.inconsistent:
                pair = (machine, check.sensor)
                seen.add(pair)
                streaks[pair] = streaks.get(pair, 0) + 1
                if streaks[pair] >= self.machine_windows:  # named in a fleet alert too, if any
                    finding = Finding(check.sensor, "machine", (feature,), (machine,), machine)
                    found[finding.key] = finding
        for pair in [p for p in streaks if p[0] and p not in seen and p[0] in present]:
            del streaks[pair]  # seen consistent: the streak ends (an absent machine keeps it)
        return found

    def _cleared(self, finding: Finding, machines: np.ndarray) -> bool:
        """A machine's alert clears only in a window that saw the machine consistent."""
        return finding.machine_id is None or finding.machine_id in set(machines.tolist())
