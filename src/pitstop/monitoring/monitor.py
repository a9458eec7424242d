"""Live drift: windows of the feature rows the processor scores, checked against the serving
model's training profile, for the fleet and per machine type.

Every ``window`` scored rows of a scope (the fleet, or one machine type), the window is compared
with the profile (``drift_from_profile``); the verdicts set Prometheus gauges, and a sensor whose
features drift raises an alert (audited, once until it clears). The model's own predictions are
checked the same way (prediction drift).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitstop.monitoring.drift import PREDICTION, FeatureDrift, drift_from_profile

log = logging.getLogger(__name__)

FLEET = "fleet"


def sensor_of(feature: str) -> str:
    """The sensor a feature is computed from (``s3__mean_10`` → ``s3``); other features name themselves."""
    return feature.split("__", 1)[0]


@dataclass
class DriftReport:
    scope: str
    rows: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None

    @property
    def drifted_sensors(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for f in self.features:
            if f.drifted:
                out.setdefault(sensor_of(f.name), []).append(f.name)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "rows": self.rows,
            "drifted_sensors": self.drifted_sensors,
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "features": [f.to_dict() for f in self.features],
        }


@dataclass
class _Window:
    rows: list[np.ndarray] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)


class DriftMonitor:
    """Collects scored rows into windows per scope and checks each full window."""

    def __init__(
        self,
        window: int = 500,
        alpha: float = 0.05,
        psi_threshold: float = 0.2,
        correction: str = "holm",
        on_report: Callable[[DriftReport, dict[str, list[str]], list[str]], None] | None = None,
        fleet_scope: bool = True,
    ) -> None:
        self.window = window
        # a fleet of several machine types has different features per type: type scopes only
        self.fleet_scope = fleet_scope
        self.alpha, self.psi_threshold, self.correction = alpha, psi_threshold, correction
        self.on_report = on_report
        self._windows: dict[str, _Window] = {}
        self._alerting: dict[str, set[str]] = {}  # scope -> sensors currently alerting
        self.latest: dict[str, DriftReport] = {}

    def observe(
        self,
        reference: dict[str, dict[str, Any]],
        names: list[str],
        rows: np.ndarray,
        predictions: np.ndarray,
        machine_types: list[str],
    ) -> list[DriftReport]:
        """Add scored rows (with their predictions and machines' types); returns the reports of
        the windows this filled."""
        if not reference or names[0] not in reference or "quantiles" not in reference[names[0]]:
            return []  # a model without a drift profile (trained before drift monitoring)
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
            if len(w.rows) >= self.window:
                reports.append(
                    self._check(scope, reference, names, np.array(w.rows), np.array(w.predictions))
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
    ) -> DriftReport:
        options = {"alpha": self.alpha, "psi_threshold": self.psi_threshold, "correction": self.correction}
        features = drift_from_profile(reference, names, rows, **options)  # type: ignore[arg-type]
        prediction = None
        if PREDICTION in reference:
            prediction = drift_from_profile(reference, [PREDICTION], predictions.reshape(-1, 1), **options)[0]  # type: ignore[arg-type]
        report = DriftReport(scope, len(rows), features, prediction)
        now = set(report.drifted_sensors) | ({PREDICTION} if prediction and prediction.drifted else set())
        before = self._alerting.get(scope, set())
        raised, cleared = sorted(now - before), sorted(before - now)
        self._alerting[scope] = now
        self.latest[scope] = report
        if raised:
            log.warning("drift alert (%s): %s", scope, ", ".join(raised))
        if self.on_report is not None:
            self.on_report(report, {s: report.drifted_sensors.get(s, [PREDICTION]) for s in raised}, cleared)
        return report
