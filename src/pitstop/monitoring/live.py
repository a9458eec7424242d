"""Live monitoring beside the stream: drift windows, data quality, and the truth when a machine fails.

The processor hands each micro-batch's scored rows and clean readings here; nothing in this module
may stop scoring (every check logs its own failure and returns).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from pitstop.maintenance import RiskPolicy
from pitstop.monitoring.metrics import Metrics
from pitstop.monitoring.monitor import DriftMonitor, DriftReport, Finding
from pitstop.monitoring.performance import record, score_failure
from pitstop.monitoring.quality import QualityMonitor, QualityPolicy
from pitstop.schema import FleetSchema
from pitstop.store import Database

log = logging.getLogger(__name__)

Audit = Callable[..., None]  # (actor, action, **detail)
Trigger = Callable[[str, str | None], bool]  # retrain (reason, machine type or all); started?


class LiveMonitor:
    """Drift per fleet and machine type against each model's training profile, missing optional
    values per sensor, and live performance at failures (``failure``)."""

    def __init__(
        self,
        settings: Any,
        metrics: Metrics,
        audit: Audit,
        retrain: Trigger,
        db: Database,
        policy_for: Callable[[str], RiskPolicy],
        fleet_scope: bool = True,
    ) -> None:
        self.metrics = metrics
        self.audit = audit
        self.retrain = retrain
        self.retrain_on_drift = bool(settings.retrain_on_drift)
        self.retrain_on_performance = bool(settings.retrain_on_performance)
        self.db, self.policy_for, self.rul_cap = db, policy_for, float(settings.rul_cap)
        self._drifted: list[tuple[str | None, str]] = []  # (type or None: all, what) this observe
        self.drift = DriftMonitor(
            settings.drift_window,
            settings.drift_alpha,
            settings.drift_psi_threshold,
            settings.drift_correction,
            on_report=self._drift_report,
            fleet_scope=fleet_scope,
            machine_windows=settings.drift_machine_windows,
            persist_windows=settings.drift_persist_windows,
        )
        self.quality = QualityMonitor(QualityPolicy.from_settings(settings), metrics, db.audit_many)

    def resume(self) -> None:
        """Carry on from the alerts still firing (a restart): drift and data-quality alerts raised
        before it are cleared, when their condition passes, like any other."""
        from sqlalchemy import select

        from pitstop.monitoring.quality import Finding as QualityFinding
        from pitstop.store import Alert

        try:
            with self.db.session() as s:
                firing = [
                    (a.kind, json.loads(a.detail))
                    for a in s.scalars(
                        select(Alert).where(
                            Alert.status == "firing", Alert.kind.in_(["drift", "data_quality"])
                        )
                    )
                ]
        except Exception:  # an ops DB without alerts yet: nothing to carry on from
            log.exception("could not read the firing alerts")
            return
        for kind, d in firing:
            if kind == "drift" and d.get("scope") and d.get("sensor"):
                finding = Finding(
                    str(d["sensor"]),
                    str(d.get("kind") or "distribution"),
                    tuple(d.get("features") or ()),
                    tuple(d.get("machines") or ()),
                    d.get("machine_id"),
                )
                self.drift.resume(str(d["scope"]), finding)
            elif kind == "data_quality" and d.get("machine_type") and d.get("check"):
                quality = QualityFinding(
                    str(d["machine_type"]),
                    str(d["check"]),
                    float(d.get("value") or 0.0),
                    float(d.get("threshold") or 0.0),
                    d.get("sensor"),
                    d.get("machine_id"),
                )
                self.quality.alerts[quality.key] = quality

    def check_quality(self, fresh: pl.DataFrame, fleet: FleetSchema, types: dict[str, str]) -> None:
        """Data quality of a batch's new readings (``pitstop.monitoring.quality``)."""
        try:
            self.quality.check(fresh, fleet, types)
        except Exception:  # monitoring must never stop scoring
            log.exception("data quality check failed")

    def observe(
        self,
        reference: dict[str, dict[str, Any]],
        names: list[str],
        matrix: np.ndarray,
        predictions: np.ndarray,
        types: list[str],
        machine_ids: list[str] | None = None,
    ) -> None:
        """Scored rows into the live drift windows (against the serving model's training baseline).
        A drift alert retrains (``retrain_on_drift``) once per call: the fleet scope's alert
        covers every type, so the same rows' alerts in type scopes start nothing more."""
        self._drifted = []
        try:
            if types:  # the profile's constant sensors are not checked for being stuck
                self.quality.learn_profile(types[0], reference)
            self.drift.observe(reference, names, matrix, predictions, types, machine_ids)
        except Exception:  # monitoring must never stop scoring
            log.exception("drift check failed")
        fleet: list[tuple[str | None, str]] = [(t, what) for t, what in self._drifted if t is None]
        once = fleet[:1] or list(dict(self._drifted).items())  # one trigger per type
        for machine_type, what in once:
            if self.retrain("drift", machine_type):
                log.warning("retraining on drift (%s)", what)
        self._drifted = []

    def failure(
        self, machine_id: str, seq: int, since: int, machine_type: str | None = None, ts_us: int | None = None
    ) -> None:
        """A machine failed at ``seq``: score the predictions made since ``since`` against the truth,
        and retrain (``retrain_on_performance``) when no work order came in time."""
        try:
            failure_ts = datetime.fromtimestamp(ts_us / 1e6, UTC) if ts_us is not None else None
            policy = self.policy_for(machine_type or "")
            report = score_failure(self.db, policy, self.rul_cap, machine_id, seq, since, failure_ts)
            if not report["predictions"]:
                return
            if machine_type:
                report["machine_type"] = machine_type  # its alert is grouped and silenced by type
            record(self.audit, self.metrics, report)
            missed = not report["caught_in_time"]
            if missed and self.retrain_on_performance and self.retrain("performance", machine_type):
                log.warning("retraining: %s failed with no work order in time", machine_id)
        except Exception:
            log.exception("could not score the predictions before %s's failure", machine_id)

    def _drift_report(
        self, report: DriftReport, raised: dict[str, Finding], cleared: dict[str, Finding]
    ) -> None:
        metrics = self.metrics
        metrics.drift_checks.labels(report.scope).inc()
        for f in report.features:
            metrics.drift_psi.labels(report.scope, f.name).set(f.psi)
        if report.prediction is not None:
            metrics.drift_psi.labels(report.scope, report.prediction.name).set(report.prediction.psi)
        # one transaction for every alert raised and cleared by this window (a storm of machine
        # alerts costs one commit); if it fails, the window's alerts are raised again by the next
        self.db.audit_many(
            [
                (
                    "monitor",
                    "drift_alert",
                    {
                        "scope": report.scope,
                        "sensor": finding.sensor,
                        "kind": finding.kind,
                        "features": list(finding.features),
                        "machines": list(finding.machines),
                        "machine_id": finding.machine_id,
                        "rows": report.rows,
                        "machines_checked": report.machines,
                    },
                )
                for finding in raised.values()
            ]
            + [
                (
                    "monitor",
                    "drift_cleared",
                    {"scope": report.scope, "sensor": finding.sensor, "machine_id": finding.machine_id},
                )
                for finding in cleared.values()
            ]
        )
        for key in raised:
            metrics.drift_alert.labels(report.scope, key).set(1)
        for key in cleared:
            metrics.drift_alert.labels(report.scope, key).set(0)
        scoped = report.scope.removeprefix("type:") if report.scope.startswith("type:") else None
        shifted = [k for k, f in raised.items() if f.kind == "distribution"]  # a faulty sensor: no
        if shifted and self.retrain_on_drift:  # started by ``observe``, once for all its scopes
            self._drifted.append((scoped, f"{report.scope}: {', '.join(shifted)}"))
