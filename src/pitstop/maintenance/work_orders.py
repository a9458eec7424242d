from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from pitstop.maintenance.policy import OPEN_STATES, RiskPolicy
from pitstop.serving import Score
from pitstop.store import WorkOrder, utcnow


def apply_policy(session: Session, policy: RiskPolicy, scores: dict[str, Score]) -> list[WorkOrder]:
    """Open a work order for each scored machine that crosses the policy and has none open."""
    at_risk = {m: s for m, s in scores.items() if policy.triggers(s.rul)}
    if not at_risk:
        return []
    already = set(
        session.scalars(
            select(WorkOrder.machine_id).where(
                WorkOrder.machine_id.in_(list(at_risk)), WorkOrder.status.in_(OPEN_STATES)
            )
        )
    )
    opened = []
    now = utcnow()
    for machine_id, score in sorted(at_risk.items()):
        if machine_id in already:
            continue
        order = WorkOrder(
            machine_id=machine_id,
            status="open",
            priority=policy.priority(score.rul),
            reason=(
                f"predicted RUL {score.rul:.0f} (interval {score.lower:.0f}–{score.upper:.0f}) "
                f"is below the threshold {policy.threshold:g}"
            ),
            predicted_rul=score.rul,
            rul_lower=score.lower,
            rul_upper=score.upper,
            model_version=score.model_version,
            opened_at=now,
        )
        session.add(order)
        opened.append(order)
    session.flush()
    return opened
