"""Work orders: opened from predictions by the risk policy, then moved through their lifecycle by
people (open → acknowledged → in progress → done or cancelled, with the technician's finding)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pitstop.errors import ConflictError, NotFoundError, PitstopError, ValidationError
from pitstop.lake.outbox import enqueue
from pitstop.maintenance.components import Explanation
from pitstop.maintenance.policy import CLOSED_STATES, FINDINGS, OPEN_STATES, PolicyState, RiskPolicy
from pitstop.serving import Score
from pitstop.store import Machine, MachineState, WorkOrder, audit_entry, utcnow

if TYPE_CHECKING:
    from pitstop.maintenance.notify import Notifier
    from pitstop.platform import Platform

log = logging.getLogger(__name__)

# the moves people make; done and cancelled are final
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("acknowledged", "in_progress", "cancelled"),
    "acknowledged": ("in_progress", "cancelled"),
    "in_progress": ("done", "cancelled"),
}


@dataclass(frozen=True)
class Reading:
    """The reading a machine's score is for."""

    seq: int
    ts: datetime


def open_work_orders(
    session: Session,
    policy_for: Callable[[str], RiskPolicy],
    scores: dict[str, Score],
    readings: dict[str, Reading],
    states: dict[str, MachineState],
    types: dict[str, str],
    explain: Callable[[str, str, Score, str], Explanation | None],
    notifier: Notifier | None = None,
) -> list[WorkOrder]:
    """Step each scored machine's risk policy (its memory kept in ``states``) and open the work
    orders it calls for: one open order per machine at most, with priority, due date, explanation
    and recommended procedure. ``types``: the scored machines' types. Runs inside the caller's
    transaction."""
    if not scores:
        return []
    ids = sorted(scores)
    policies = {t: policy_for(t) for t in {types.get(m, "") for m in ids}}
    # an armed machine whose lower bound is at or above its threshold steps alike whether or not
    # it has an open order (nothing fires, nothing changes): only the others need the lookup
    ask = [
        m
        for m in ids
        if (st := states.get(m)) is not None
        and (st.policy_armed is False or scores[m].lower < policies[types.get(m, "")].threshold)
    ]
    already = (
        set(
            session.scalars(
                select(WorkOrder.machine_id).where(
                    WorkOrder.machine_id.in_(ask), WorkOrder.status.in_(OPEN_STATES)
                )
            )
        )
        if ask
        else set()
    )
    opened = []
    now = utcnow()
    for machine_id in ids:
        score, state, reading = scores[machine_id], states.get(machine_id), readings.get(machine_id)
        if state is None or reading is None:
            continue
        machine_type = types.get(machine_id, "")
        policy = policies[machine_type]
        memory = PolicyState(
            armed=state.policy_armed is not False,
            open=machine_id in already,
            rearm_seq=state.policy_rearm_seq,
        )
        fire = policy.step(memory, score.lower, policy.position(reading.seq, reading.ts))
        state.policy_armed, state.policy_rearm_seq = memory.armed, memory.rearm_seq
        if not fire:
            continue
        priority = policy.priority(score.lower)
        explanation = explain(machine_id, machine_type, score, priority)
        due = policy.due_in(score.lower)
        reason = (
            f"the RUL interval's lower bound {score.lower:.0f} (predicted {score.rul:.0f}, interval "
            f"{score.lower:.0f}–{score.upper:.0f}) fell below the threshold {policy.threshold:g}; "
            f"the workshop needs {policy.lead_time:g}"
        )
        if explanation is not None and explanation.top_sensors:
            reason += "; driven by " + ", ".join(str(t["sensor"]) for t in explanation.top_sensors)
        order = WorkOrder(
            machine_id=machine_id,
            status="open",
            priority=priority,
            reason=reason,
            predicted_rul=score.rul,
            rul_lower=score.lower,
            rul_upper=score.upper,
            model_version=score.model_version,
            opened_at=now,
            seq=reading.seq,
            lead_time=policy.lead_time,
            due_at=reading.ts + timedelta(seconds=due * policy.unit_seconds),
            explanation=json.dumps(explanation.to_dict() if explanation else {}),
            component=explanation.component if explanation else None,
            procedure=explanation.procedure if explanation else None,
        )
        session.add(order)
        opened.append(order)
    session.flush()
    if notifier is not None:
        for order in opened:
            notifier.enqueue(session, "work_order.opened", work_order_json(order))
    return opened


def work_order_json(order: WorkOrder) -> dict[str, Any]:
    return {
        "id": order.id,
        "machine_id": order.machine_id,
        "status": order.status,
        "priority": order.priority,
        "reason": order.reason,
        "predicted_rul": order.predicted_rul,
        "rul_interval": [order.rul_lower, order.rul_upper],
        "model_version": order.model_version,
        "seq": order.seq,
        "lead_time": order.lead_time,
        "due_at": _iso(order.due_at),
        "explanation": json.loads(order.explanation or "{}"),
        "component": order.component,
        "procedure": order.procedure,
        "machine_url": f"/machines/{order.machine_id}",
        "opened_at": _iso(order.opened_at),
        "acknowledged_at": _iso(order.acknowledged_at),
        "started_at": _iso(order.started_at),
        "closed_at": _iso(order.closed_at),
        "finding": order.finding,
        "note": order.note,
        "technician": order.technician,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def transition(
    platform: Platform,
    order_id: int,
    status: str,
    finding: str | None = None,
    note: str | None = None,
    technician: str | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """Move a work order on, as ``technician`` (the authenticated user, with their ``role``).
    ``done`` needs the technician's finding. Closing it tells the risk
    policy (after "no fault found" the machine is watched again ``recheck_after`` readings later);
    a repair (``done`` with a fault confirmed or other work) writes a ``maintenance`` event to the
    lake, which resets the machine's baseline, and "no fault found" an ``inspection`` event. The
    finding stays on the order and in the event: feedback for training and monitoring."""
    if finding is not None and finding not in FINDINGS:
        raise ValidationError(f"unknown finding {finding!r}; one of {list(FINDINGS)}", code="invalid_finding")
    if status == "done" and finding is None:
        raise ValidationError(
            f"closing a work order as done needs the finding: one of {list(FINDINGS)}",
            code="finding_required",
        )
    now = utcnow()
    event: dict[str, Any] | None = None
    with platform.db.session() as s:
        # locked to the end of the transaction (PostgreSQL; SQLite has one writer at a time): of
        # two moves racing on one order, the second sees the first's status, so it closes once
        order = s.get(WorkOrder, order_id, with_for_update=True)
        if order is None:
            raise NotFoundError(f"no work order {order_id}", code="work_order_not_found")
        allowed = TRANSITIONS.get(order.status, ())
        if status not in allowed:
            moves = list(allowed) or "nothing (it is closed)"
            raise ConflictError(
                f"work order {order_id} is {order.status}: it can move to {moves}",
                code="invalid_transition",
            )
        order.status = status
        if status == "acknowledged":
            order.acknowledged_at = now
        elif status == "in_progress":
            order.started_at = now
            order.acknowledged_at = order.acknowledged_at or now
        order.note = note if note is not None else order.note
        order.technician = technician if technician is not None else order.technician
        if status in CLOSED_STATES:
            order.closed_at, order.finding = now, finding
            state = s.get(MachineState, order.machine_id, with_for_update=True)
            if state is not None:
                machine = s.get(Machine, order.machine_id)
                policy = platform.policy_for(machine.machine_type if machine else "")
                memory = PolicyState(armed=False, open=True, rearm_seq=state.policy_rearm_seq)
                policy.closed(
                    memory, finding, policy.position(state.last_seq or order.seq or 0, state.last_ts)
                )
                repaired = status == "done" and finding != "no_fault_found"
                if repaired:
                    RiskPolicy.reset(memory)  # the maintenance event starts a new episode
                state.policy_armed, state.policy_rearm_seq = memory.armed, memory.rearm_seq
                if status == "done":
                    detail = {
                        "work_order": order.id,
                        "finding": finding,
                        "note": order.note,
                        "technician": order.technician,
                    }
                    event = {
                        "machine_id": order.machine_id,
                        "ts": now,
                        "seq": state.last_seq,
                        "kind": "maintenance" if repaired else "inspection",
                        "detail": json.dumps(detail),
                    }
        body = work_order_json(order)
        if platform.notifier is not None:
            platform.notifier.enqueue(s, f"work_order.{status}", body)
        # one unit: the order, its event (through the outbox), its webhook and its audit row
        if event is not None:
            enqueue(s, "events", event)
        s.add(
            audit_entry(
                technician or "api", f"work_order_{status}", role=role, work_order=order_id, finding=finding
            )
        )
    if event is not None:
        _drain(platform)
    return body


def _drain(platform: Platform) -> None:
    """Append the event now if the lake takes it; else it stays in the outbox for the next drain
    (the processor drains at the start of every loop)."""
    try:
        platform.outbox.drain()
    except PitstopError as exc:
        log.warning("work-order event kept in the outbox for the next drain: %s", exc.message)
    except Exception:  # the order is committed: the caller hears of it, the event waits
        log.exception("work-order event kept in the outbox for the next drain")
