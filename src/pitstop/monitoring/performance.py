"""Live model performance: when a machine fails, how good were the predictions made before it?

For each failure (an event of kind ``failure``), the acting predictions the processor logged for
that machine since its previous reset are compared with the truth that is now known (readings
left = failure seq - seq, or the time left in the type's unit): absolute RUL error by horizon, and
whether a work order opened in time (at least the policy's lead time before the failure) and with
what lead. Per arm and model version (a canary or A/B serves two), the MAE and RMSE of its
predictions and the arm acting at the failure: the evidence ``arms`` compares deployments on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from pitstop.maintenance import RiskPolicy
from pitstop.monitoring.metrics import Metrics
from pitstop.store import Database, Prediction, WorkOrder

HORIZONS = ((0, 10), (10, 30), (30, 60), (60, 125))
ACTING_ARMS = ("champion", "canary", "a", "b")


def score_failure(
    db: Database,
    policy: RiskPolicy,
    rul_cap: float,
    machine_id: str,
    failure_seq: int,
    since_seq: int = -1,
    failure_ts: datetime | None = None,
) -> dict[str, Any]:
    """The predictions for ``machine_id`` at seqs in ``(since_seq, failure_seq]`` against the
    truth, and the work order (if any) opened for this failure. For a type that counts time (and
    a failure with its ``failure_ts``), truth and lead are in its time unit, from the timestamps."""
    with db.session() as s:
        rows = s.execute(
            select(
                Prediction.seq,
                Prediction.rul,
                Prediction.rul_lower,
                Prediction.rul_upper,
                Prediction.model_version,
                Prediction.ts,
                Prediction.arm,
            )
            .where(
                Prediction.machine_id == machine_id,
                Prediction.seq > since_seq,
                Prediction.seq <= failure_seq,
                Prediction.arm.in_(ACTING_ARMS),
            )
            .order_by(Prediction.seq)
        ).all()
        order = s.scalars(
            select(WorkOrder)
            .where(
                WorkOrder.machine_id == machine_id, WorkOrder.seq > since_seq, WorkOrder.seq <= failure_seq
            )
            .order_by(WorkOrder.id)
        ).first()
    lead_time = policy.lead_time
    timed = policy.timed and failure_ts is not None

    def until_failure(seq: int, ts: datetime) -> float:
        if timed and failure_ts is not None:
            return (failure_ts - ts).total_seconds() / policy.unit_seconds
        return float(failure_seq - seq)

    report: dict[str, Any] = {
        "machine_id": machine_id,
        "failure_seq": failure_seq,
        "predictions": len(rows),
        "models": sorted({r.model_version for r in rows}),
        "by_horizon": [],
        "work_order": None,
        "caught_in_time": False,
        "arms": [],
    }
    if rows:
        rul = np.array([r.rul for r in rows])
        truth = np.array([until_failure(r.seq, r.ts) for r in rows])
        capped = np.minimum(truth, rul_cap) if not timed else truth
        covered = np.array([r.rul_lower <= t <= r.rul_upper for r, t in zip(rows, truth, strict=True)])
        for lo, hi in HORIZONS:
            mask = (truth > lo) & (truth <= hi) if lo else (truth >= lo) & (truth <= hi)
            if mask.any():
                error = rul[mask] - capped[mask]
                report["by_horizon"].append(
                    {
                        "horizon": f"{lo}-{hi}",
                        "predictions": int(mask.sum()),
                        "mae": round(float(np.mean(np.abs(error))), 3),
                        "bias": round(float(np.mean(error)), 3),
                        "interval_coverage": round(float(np.mean(covered[mask])), 3),
                    }
                )
        # per arm and version (a canary or A/B): one failure is one unit of evidence for its arm
        arms = [(r.arm, r.model_version) for r in rows]
        for arm, version in sorted(set(arms)):
            mask = np.array([a == (arm, version) for a in arms])
            error = rul[mask] - capped[mask]
            report["arms"].append(
                {
                    "arm": arm,
                    "version": version,
                    "predictions": int(mask.sum()),
                    "mae": round(float(np.mean(np.abs(error))), 3),
                    "rmse": round(float(np.sqrt(np.mean(error**2))), 3),
                }
            )
        report["arm_at_failure"] = {"arm": rows[-1].arm, "version": rows[-1].model_version}
    if order is not None and order.seq is not None:
        at = next((r.ts for r in rows if r.seq == order.seq), None)
        lead = round(until_failure(order.seq, at), 3) if at is not None else failure_seq - order.seq
        report["work_order"] = {
            "id": order.id,
            "opened_at_seq": order.seq,
            "lead": lead,
            "status": order.status,
        }
        report["caught_in_time"] = bool(lead >= lead_time)
    return report


def recent_failures(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """The latest failure reports (kept in the audit log as ``failure_scored``)."""
    return [e["detail"] for e in db.audit_entries(limit=limit, action="failure_scored")]


def record(audit: Callable[..., None], metrics: Metrics, report: dict[str, Any]) -> None:
    """Audit a failure report and feed the live-performance metrics."""
    audit("monitor", "failure_scored", **json.loads(json.dumps(report, default=str)))
    m = metrics
    m.failures_scored.labels("caught" if report["caught_in_time"] else "missed").inc()
    for h in report["by_horizon"]:
        m.live_rul_mae.labels(h["horizon"]).set(h["mae"])
