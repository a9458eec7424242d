"""Deployments judged by numbers: per machine type, the champion's arm against the challenger's.

A canary or A/B deployment sends a stable share of a type's machines to the challenger (see
``serving.deployment``). For each arm (the champion's version on arms ``champion``/``a``, the
challenger's on ``canary``/``b``, or ``shadow`` where it only shadows) this reports, over the time
both have served (from the challenger's first prediction; in a progressive canary, from the
start of its current step):

- the distribution of its predictions (n, mean, quantiles);
- its live error at failures: each failure scored (``failure_scored``, see ``performance``) is one
  unit of evidence for the arm that made the predictions before it, with their MAE and RMSE, and
  whether a work order came in time (counted for the arm acting at the failure);
- the work orders its version opened (count, machines, per scored reading);
- the guard's events against its version.

And for each metric a test suited to it (``stats``) with its p-value, effect, verdict and the
sample size per arm the test needs. The shadow arm's predictions are never acted on: no failure
error or work orders are counted for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select

from pitstop.errors import NotFoundError, PitstopError
from pitstop.monitoring.stats import (
    ALPHA,
    POWER,
    compare_counts,
    compare_distributions,
    compare_errors,
    compare_rates,
)
from pitstop.serving.deployment import Deployment
from pitstop.store import Database, Machine, Prediction, WorkOrder

CHAMPION_ARMS = ("champion", "a")
CHALLENGER_ARMS = ("canary", "b", "shadow")
GUARD_ACTIONS = ("challenger_withdrawn", "champion_rolled_back", "model_refused")
CANARY_ACTIONS = ("canary_started", "canary_advanced", "canary_rolled_back", "canary_completed")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SAMPLE = 20_000  # the newest predictions per arm the distribution is taken from


@dataclass(frozen=True)
class Arms:
    """What one machine type serves: its registered model, mode and the two versions."""

    machine_type: str
    model_name: str
    mode: str
    challenger_percent: int
    champion: str | None
    challenger: str | None


@dataclass(frozen=True)
class FailureUnit:
    ts: datetime
    side: str  # champion | challenger
    mae: float  # of the side's predictions before this failure
    rmse: float
    predictions: int


@dataclass(frozen=True)
class Evidence:
    """The failures scored for each side since a moment: errors and caught-in-time."""

    errors: dict[str, list[FailureUnit]]
    caught: dict[str, list[bool]]
    mixed: int = 0  # failures whose predictions came from both sides: no evidence for either

    def mae(self, side: str, since: datetime | None = None) -> np.ndarray:
        return np.array([u.mae for u in self.errors[side] if since is None or u.ts >= since])

    def caught_counts(self, side: str) -> tuple[int, int]:
        flags = self.caught[side]
        return sum(flags), len(flags)


def arms_of(deployment: Deployment) -> Arms:
    """The versions a type's deployment serves (as loaded; else where its aliases point)."""
    versions: dict[str, str | None] = {}
    versions["challenger"] = None  # a champion-only deployment serves no challenger
    for alias, scorer in (("champion", deployment.champion), ("challenger", deployment.challenger)):
        if scorer is None:
            continue
        if scorer.loaded:
            versions[alias] = scorer.model.version
            continue
        try:
            versions[alias] = deployment.registry.alias_version(alias)
        except PitstopError:  # the registry cannot be read: report what is known
            versions[alias] = None
    options = deployment.options
    return Arms(
        deployment.machine_type,
        deployment.registry.model_name,
        options.mode,
        options.challenger_percent,
        versions["champion"],
        versions["challenger"],
    )


def machines_of(db: Database, machine_type: str) -> set[str]:
    with db.session() as s:
        return set(s.scalars(select(Machine.machine_id).where(Machine.machine_type == machine_type)))


def _side(arms: Arms, arm: str, version: str) -> str | None:
    if arm in CHAMPION_ARMS and version == arms.champion:
        return "champion"
    if arm in CHALLENGER_ARMS and version == arms.challenger:
        return "challenger"
    return None


def failure_evidence(
    db: Database, arms: Arms, since: datetime | None = None, machines: set[str] | None = None
) -> Evidence:
    """Each failure scored since ``since`` for a machine of the type, as evidence for the side
    (champion or challenger version) whose predictions preceded it. A failure whose predictions
    came from both (its machine moved to the challenger mid-life, at a canary step) counts for
    neither: each side would have predicted a different stretch of the life."""
    machines = machines_of(db, arms.machine_type) if machines is None else machines
    errors: dict[str, list[FailureUnit]] = {"champion": [], "challenger": []}
    caught: dict[str, list[bool]] = {"champion": [], "challenger": []}
    mixed = 0
    for entry in reversed(db.audit_entries(limit=5000, action="failure_scored")):
        ts = datetime.fromisoformat(entry["ts"])
        detail = entry["detail"]
        if detail.get("machine_id") not in machines or (since is not None and ts < since):
            continue
        parts = detail.get("arms", [])
        if len(parts) > 1:
            mixed += 1
            continue
        for part in parts:
            side = _side(arms, part["arm"], part["version"])
            if side is not None:
                errors[side].append(
                    FailureUnit(ts, side, float(part["mae"]), float(part["rmse"]), int(part["predictions"]))
                )
        last = detail.get("arm_at_failure")
        side = _side(arms, last["arm"], last["version"]) if last else None
        if side is not None:
            caught[side].append(bool(detail.get("caught_in_time")))
    return Evidence(errors, caught, mixed)


def _predictions(db: Database, arms: Arms, side: str, since: datetime | None) -> tuple[np.ndarray, int, int]:
    """The newest SAMPLE predictions of a side, all its predictions and machines (since ``since``)."""
    version = arms.champion if side == "champion" else arms.challenger
    names = CHAMPION_ARMS if side == "champion" else CHALLENGER_ARMS
    where = [
        Prediction.model_name == arms.model_name,
        Prediction.model_version == version,
        Prediction.arm.in_(names),
    ]
    if since is not None:
        where.append(Prediction.created_at >= since)
    with db.session() as s:
        rul = s.scalars(select(Prediction.rul).where(*where).order_by(Prediction.id.desc()).limit(SAMPLE))
        values = np.array(list(rul), float)
        n, machines = s.execute(
            select(func.count(), func.count(func.distinct(Prediction.machine_id))).where(*where)
        ).one()
    return values, int(n), int(machines)


def _acting(db: Database, arms: Arms, side: str, since: datetime | None) -> int:
    """Scored readings the side acted on (not shadow): the exposure for work orders."""
    version = arms.champion if side == "champion" else arms.challenger
    names = CHAMPION_ARMS if side == "champion" else ("canary", "b")
    where = [
        Prediction.model_name == arms.model_name,
        Prediction.model_version == version,
        Prediction.arm.in_(names),
    ]
    if since is not None:
        where.append(Prediction.created_at >= since)
    with db.session() as s:
        return int(s.scalar(select(func.count()).where(*where)) or 0)


def _work_orders(
    db: Database, version: str | None, machines: set[str], since: datetime | None
) -> tuple[int, int]:
    where = [WorkOrder.model_version == version, WorkOrder.machine_id.in_(sorted(machines))]
    if since is not None:
        where.append(WorkOrder.opened_at >= since)
    with db.session() as s:
        n, distinct = s.execute(
            select(func.count(), func.count(func.distinct(WorkOrder.machine_id))).where(*where)
        ).one()
    return int(n), int(distinct)


def _guard_events(db: Database, arms: Arms) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"champion": [], "challenger": []}
    for action in GUARD_ACTIONS:
        for e in db.audit_entries(limit=200, action=action):
            d = e["detail"]
            if d.get("machine_type") != arms.machine_type:
                continue
            version = d.get("version") or d.get("from_version") or d.get("serving")
            side = (
                "champion"
                if version == arms.champion
                else "challenger"
                if version == arms.challenger
                else None
            )
            if side is not None:
                out[side].append(
                    {"ts": e["ts"], "action": action, "version": version, "reason": d.get("reason")}
                )
    return out


def first_prediction(db: Database, model_name: str, version: str | None) -> datetime | None:
    if version is None:
        return None
    with db.session() as s:
        return s.scalar(
            select(func.min(Prediction.created_at)).where(
                Prediction.model_name == model_name,
                Prediction.model_version == version,
                Prediction.arm.in_(CHALLENGER_ARMS),
            )
        )


def canary_state(db: Database, machine_type: str) -> dict[str, Any] | None:
    """The latest progressive-canary step audited for the type (None: never one)."""
    latest: dict[str, Any] | None = None
    for action in CANARY_ACTIONS:
        for e in db.audit_entries(limit=200, action=action):
            if e["detail"].get("machine_type") == machine_type and (latest is None or e["id"] > latest["id"]):
                latest = e
                break
    if latest is None:
        return None
    return {"action": latest["action"], "ts": latest["ts"], **latest["detail"]}


def arms_report(db: Database, arms: Arms, alpha: float = ALPHA) -> dict[str, Any]:
    """One machine type's arms, side by side, and their comparisons (see the module doc)."""
    since = first_prediction(db, arms.model_name, arms.challenger)
    canary = canary_state(db, arms.machine_type)
    if (
        canary is not None
        and canary.get("version") == arms.challenger
        and canary["action"] in ("canary_started", "canary_advanced")
    ):
        # a progressive canary: the current step only (the shares changed at each step, and a
        # comparison across them would mix periods in different proportions per arm)
        step = datetime.fromisoformat(canary["ts"])
        since = step if since is None else max(since, step)
    machines = machines_of(db, arms.machine_type)
    evidence = failure_evidence(db, arms, since, machines)
    guard = _guard_events(db, arms)
    sides: dict[str, Any] = {}
    samples: dict[str, np.ndarray] = {}
    exposure: dict[str, tuple[int, int]] = {}
    for side, version in (("champion", arms.champion), ("challenger", arms.challenger)):
        if version is None:
            sides[side] = None
            continue
        values, n, distinct = _predictions(db, arms, side, since)
        samples[side] = values
        mae = evidence.mae(side)
        units = evidence.errors[side]
        weights = np.array([u.predictions for u in units], float)
        caught, failures = evidence.caught_counts(side)
        orders, order_machines = _work_orders(db, version, machines, since)
        acted = _acting(db, arms, side, since)
        exposure[side] = (orders, acted)
        sides[side] = {
            "version": version,
            "arms": list(CHAMPION_ARMS if side == "champion" else CHALLENGER_ARMS),
            "predictions": {
                "n": n,
                "machines": distinct,
                "mean": _round(values.mean()) if len(values) else None,
                "quantiles": (
                    {f"p{round(q * 100):02d}": _round(np.quantile(values, q)) for q in QUANTILES}
                    if len(values)
                    else None
                ),
                "sample": len(values),
            },
            "failures": {
                "scored": len(units),
                "predictions": int(weights.sum()),
                # over all the predictions before the failures
                "mae": _round(np.average(mae, weights=weights)) if len(units) else None,
                "rmse": (
                    _round(np.sqrt(np.average([u.rmse**2 for u in units], weights=weights)))
                    if len(units)
                    else None
                ),
                # the test's unit: one MAE per failure
                "mae_per_failure": _round(mae.mean()) if len(mae) else None,
                "mae_per_failure_sd": _round(mae.std(ddof=1)) if len(mae) > 1 else None,
                "at_failure": failures,
                "caught_in_time": caught,
                "caught_rate": _round(caught / failures) if failures else None,
            },
            "work_orders": {
                "opened": orders,
                "machines": order_machines,
                "per_machine": _round(orders / distinct) if distinct else None,
                "per_1000_readings": _round(1000 * orders / acted) if acted else None,
            },
            "guard_events": {"count": len(guard[side]), "latest": guard[side][:5]},
        }
    comparisons = []
    if sides.get("champion") and sides.get("challenger"):
        comparisons = [
            compare_distributions("predicted_rul", samples["champion"], samples["challenger"], alpha),
            compare_errors("mae_at_failure", evidence.mae("champion"), evidence.mae("challenger"), alpha),
            compare_rates(
                "caught_in_time",
                evidence.caught_counts("champion"),
                evidence.caught_counts("challenger"),
                alpha,
            ),
            compare_counts("work_orders_per_reading", exposure["champion"], exposure["challenger"], alpha),
        ]
    return {
        "machine_type": arms.machine_type,
        "model": arms.model_name,
        "mode": arms.mode,
        "challenger_percent": arms.challenger_percent,
        "since": since.isoformat() if since is not None else None,
        "arms": sides,
        "comparisons": [c.to_dict() for c in comparisons],
        "failures_mixed": evidence.mixed,
        "canary": canary,
    }


def deployments_report(
    db: Database,
    deployments: dict[str, Deployment],
    alpha: float = ALPHA,
    machine_type: str | None = None,
) -> dict[str, Any]:
    """Every machine type's arms report (or one type's): what ``pitstop deployments report
    --json`` prints and ``GET /api/v1/deployments`` returns."""
    if machine_type is not None and machine_type not in deployments:
        known = ", ".join(sorted(deployments))
        raise NotFoundError(
            f"no machine type {machine_type!r}; the fleet's types are {known}", code="unknown_machine_type"
        )
    chosen = [d for name, d in deployments.items() if machine_type in (None, name)]
    return {
        "alpha": alpha,
        "power": POWER,
        "machine_types": {d.machine_type: arms_report(db, arms_of(d), alpha) for d in chosen},
    }


def _round(value: float) -> float | None:
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None
