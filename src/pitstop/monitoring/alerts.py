"""One alert model for everything that needs a person: drift, data quality, live performance,
guard withdrawals, rollbacks, retrain outcomes, canary rollbacks and overdue work orders.

Alerts come from audit rows. ``Alerts.attach`` hooks the ops DB's sessions: before each flush it
looks at the new ``AuditEntry`` rows, and for the actions in ``alert_rules.RULES`` raises or
resolves an alert and queues its notifications in the outbox, in the same transaction as the audit
row. So an alert is never lost (no audit row without its alert) and never doubled (a rollback
leaves neither; one firing row per key, which a unique index holds).

- Severity: info, warning, critical; only those at or above ``alert_min_severity`` are sent.
- Dedup: a re-raise of a firing key bumps its ``count`` and ``last_at`` and sends nothing.
- Resolve: the firing alert is closed; its resolve is sent when its raise was.
- Grouping: notifications of one group (kind and machine type) queued within ``alert_group_s``
  of the group's first go out as one message (see ``Notifier.enqueue_alert``).
- Silences (kind / machine type / key prefix, until a time, by a user, with a reason): a silenced
  alert is recorded and listed, never sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from pitstop.errors import NotFoundError, ValidationError
from pitstop.monitoring.alert_rules import KINDS, RULES, Signal, severity_rank, signal_for
from pitstop.store import Alert, AlertSilence, AuditEntry, Database, Machine, WorkOrder, audit_entry, utcnow

if TYPE_CHECKING:
    from pitstop.config import Settings

EVENT_KINDS: Final = frozenset(rule.kind for rule in RULES if rule.op == "event")
OVERDUE: Final = "work_order_overdue"
_OPEN_ORDERS: Final = ("open", "acknowledged", "in_progress")

# (session, group, alert as JSON, seconds to hold it for its group) -> queued in the outbox
Notify = Callable[[Session, str, dict[str, Any], float], None]


@dataclass(frozen=True)
class AlertPolicy:
    """What is sent and when; built once at start from the settings."""

    min_severity: str = "warning"
    group_s: float = 30.0
    event_ttl_s: float = 24 * 3600.0
    check_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        return cls(
            min_severity=settings.alert_min_severity,
            group_s=settings.alert_group_s,
            event_ttl_s=settings.alert_event_ttl_s,
            check_s=settings.alert_check_s,
        )


class Alerts:
    """Raises and resolves alerts from audit rows; ``attach`` it to the ops DB at start."""

    def __init__(self, policy: AlertPolicy, notify: Notify | None = None) -> None:
        self.policy = policy
        self.notify = notify
        self._db: Database | None = None

    def attach(self, db: Database) -> None:
        """Watch ``db``'s audit rows from now on (the platform calls it once, at start)."""
        self._db = db
        db.on_flush(self._on_flush)

    # -- from audit rows, inside their transaction ----------------------------------------------
    def _on_flush(self, session: Session) -> None:
        entries = [obj for obj in session.new if isinstance(obj, AuditEntry)]
        if not entries:
            return
        seen: dict[str, Alert] = {}  # raised earlier in this flush: not in the DB yet
        with session.no_autoflush:
            signals: list[tuple[Signal, dict[str, Any], datetime]] = []
            for entry in sorted(entries, key=lambda e: e.ts):
                try:
                    detail = json.loads(entry.detail or "{}")
                except ValueError:
                    continue
                signal = signal_for(entry.action, entry.actor, detail if isinstance(detail, dict) else {})
                if signal is not None:
                    signals.append((signal, detail, entry.ts or utcnow()))
            if not signals:
                return
            # two queries for the whole flush, however many rows it carries (an alert storm of a
            # hundred machines is one transaction): the firing alerts of its keys, the silences
            context = _Context(
                _firing(session, {signal.key for signal, _, _ in signals}),
                list(
                    session.scalars(
                        select(AlertSilence)
                        .where(
                            AlertSilence.removed_at.is_(None),
                            AlertSilence.until > min(at for _, _, at in signals),  # ended: not read
                        )
                        .order_by(AlertSilence.id)
                    )
                ),
                seen,
            )
            for signal, detail, at in signals:
                self._apply(session, signal, detail, at, context)

    def _apply(
        self, s: Session, signal: Signal, detail: dict[str, Any], at: datetime, context: _Context
    ) -> None:
        seen = context.seen
        alert = seen.get(signal.key)
        if alert is None or alert.status != "firing":
            alert = context.firing.get(signal.key)
        if signal.op == "resolve":
            if alert is None:
                return
            alert.status, alert.resolved_at = "resolved", at
            seen[signal.key] = alert
            if alert.silenced_by is None and _silence_for(context.silences, alert, at) is None:
                self._send(s, alert, "resolved")
            return
        if alert is not None:  # a re-raise of a firing key: counted, not sent again
            alert.count += 1
            alert.last_at = at
            return
        alert = Alert(
            key=signal.key,
            kind=signal.kind,
            severity=signal.severity,
            group_key=signal.group,
            machine_type=signal.machine_type,
            machine_id=signal.machine_id,
            summary=signal.summary,
            detail=json.dumps(detail, default=str),
            status="firing",
            count=1,
            first_at=at,
            last_at=at,
        )
        silence = _silence_for(context.silences, alert, at)
        alert.silenced_by = silence.id if silence is not None else None
        s.add(alert)
        seen[signal.key] = alert
        if silence is None:
            self._send(s, alert, "firing")

    def _send(self, s: Session, alert: Alert, status: str) -> None:
        if self.notify is None or severity_rank(alert.severity) < severity_rank(self.policy.min_severity):
            return
        self.notify(s, alert.group_key, {**alert_json(alert), "status": status}, self.policy.group_s)

    # -- the periodic check ---------------------------------------------------------------------
    def sweep(self, now: datetime | None = None) -> None:
        """Raise ``work_order_overdue`` for open orders past their due date (through an audit
        row, like every source), clear those whose order is closed or no longer late, and
        resolve quietly the events raised more than ``alert_event_ttl_s`` ago."""
        if self._db is None:
            return
        now = now or utcnow()
        with self._db.session() as s:
            firing = {
                a.key: a
                for a in s.scalars(select(Alert).where(Alert.status == "firing", Alert.kind == OVERDUE))
            }
            late = s.execute(
                select(WorkOrder, Machine.machine_type)
                .join(Machine, Machine.machine_id == WorkOrder.machine_id)
                .where(WorkOrder.status.in_(_OPEN_ORDERS), WorkOrder.due_at < now)
            ).all()
            keys = set()
            for order, machine_type in late:
                key = f"{OVERDUE}:{order.id}"
                keys.add(key)
                if key not in firing:
                    due = order.due_at.isoformat() if order.due_at is not None else None
                    s.add(
                        audit_entry(
                            "monitor",
                            OVERDUE,
                            work_order=order.id,
                            machine_id=order.machine_id,
                            machine_type=machine_type,
                            priority=order.priority,
                            due_at=due,
                        )
                    )
            for key, alert in firing.items():
                if key not in keys:
                    order_id = json.loads(alert.detail).get("work_order")
                    s.add(audit_entry("monitor", f"{OVERDUE}_cleared", work_order=order_id))
            old = now - timedelta(seconds=self.policy.event_ttl_s)
            for alert in s.scalars(
                select(Alert).where(
                    Alert.status == "firing", Alert.kind.in_(EVENT_KINDS), Alert.last_at < old
                )
            ):
                alert.status, alert.resolved_at = "resolved", now


@dataclass
class _Context:
    """What one flush's rows are applied against, read once for all of them."""

    firing: dict[str, Alert]  # key -> its firing alert in the DB
    silences: list[AlertSilence]  # not removed nor ended before the flush's first row, oldest first
    seen: dict[str, Alert]  # raised or resolved earlier in this flush


def _firing(s: Session, keys: set[str]) -> dict[str, Alert]:
    """The firing alert of each of ``keys`` that has one (in chunks: a database's bound-parameter
    limit)."""
    found: dict[str, Alert] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        for alert in s.scalars(
            select(Alert).where(Alert.key.in_(chunk), Alert.status == "firing").order_by(Alert.id)
        ):
            found.setdefault(alert.key, alert)
    return found


def _silence_for(silences: list[AlertSilence], alert: Alert, at: datetime) -> AlertSilence | None:
    """The first silence of ``silences`` (active ones, oldest first) that covers ``alert`` at ``at``."""
    for silence in silences:
        if silence.until <= at:
            continue
        if silence.kind is not None and silence.kind != alert.kind:
            continue
        if silence.machine_type is not None and silence.machine_type != alert.machine_type:
            continue
        if silence.key_prefix is not None and not alert.key.startswith(silence.key_prefix):
            continue
        return silence
    return None


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "key": alert.key,
        "kind": alert.kind,
        "severity": alert.severity,
        "status": alert.status,
        "group": alert.group_key,
        "machine_type": alert.machine_type,
        "machine_id": alert.machine_id,
        "summary": alert.summary,
        "count": alert.count,
        "first_at": alert.first_at.isoformat(),
        "last_at": alert.last_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at is not None else None,
        "silenced_by": alert.silenced_by,
        "detail": json.loads(alert.detail or "{}"),
    }


def silence_json(silence: AlertSilence) -> dict[str, Any]:
    return {
        "id": silence.id,
        "kind": silence.kind,
        "machine_type": silence.machine_type,
        "key_prefix": silence.key_prefix,
        "until": silence.until.isoformat(),
        "created_by": silence.created_by,
        "reason": silence.reason,
        "created_at": silence.created_at.isoformat(),
        "removed_at": silence.removed_at.isoformat() if silence.removed_at is not None else None,
    }


# -- reading and silencing (CLI and API) --------------------------------------------------------
def list_alerts(
    db: Database,
    status: str | None = "firing",
    kind: str | None = None,
    machine_type: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Alerts newest first: firing ones (``status=None``: every one), optionally of one kind or type."""
    query = select(Alert).order_by(Alert.last_at.desc(), Alert.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Alert.status == status)
    if kind is not None:
        query = query.where(Alert.kind == kind)
    if machine_type is not None:
        query = query.where(Alert.machine_type == machine_type)
    with db.session() as s:
        return [alert_json(a) for a in s.scalars(query)]


def list_silences(db: Database, active: bool = True) -> list[dict[str, Any]]:
    query = select(AlertSilence).order_by(AlertSilence.id.desc())
    if active:
        query = query.where(AlertSilence.removed_at.is_(None), AlertSilence.until > utcnow())
    with db.session() as s:
        return [silence_json(x) for x in s.scalars(query)]


def add_silence(
    db: Database,
    actor: str,
    *,
    duration_s: float,
    reason: str,
    kind: str | None = None,
    machine_type: str | None = None,
    key_prefix: str | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    """Silence matching alerts for ``duration_s`` (audited as ``alert_silenced`` by ``actor``)."""
    if kind is None and machine_type is None and not key_prefix:
        raise ValidationError(
            "a silence names what it matches: a kind, a machine type or a key prefix",
            code="silence_matches_everything",
        )
    if kind is not None and kind not in KINDS:
        raise ValidationError(f"unknown alert kind {kind!r}; one of {', '.join(KINDS)}", code="unknown_kind")
    if not 0 < duration_s <= 366 * 24 * 3600:
        raise ValidationError("a silence lasts more than 0 s and at most a year", code="bad_duration")
    if not reason.strip():
        raise ValidationError("a silence needs a reason (--reason)", code="reason_required")
    now = utcnow()
    with db.session() as s:
        silence = AlertSilence(
            kind=kind,
            machine_type=machine_type,
            key_prefix=key_prefix or None,
            until=now + timedelta(seconds=duration_s),
            created_by=actor,
            reason=reason.strip(),
            created_at=now,
        )
        s.add(silence)
        s.flush()
        body = silence_json(silence)
        s.add(
            audit_entry(
                actor,
                "alert_silenced",
                role=role,
                **{k: v for k, v in body.items() if k != "id"},
                silence=silence.id,
            )
        )
    return body


def remove_silence(db: Database, actor: str, silence_id: int, role: str | None = None) -> dict[str, Any]:
    """End a silence now (audited as ``alert_unsilenced``)."""
    with db.session() as s:
        silence = s.get(AlertSilence, silence_id)
        if silence is None or silence.removed_at is not None:
            raise NotFoundError(
                f"no active silence {silence_id}: `pitstop alerts list --silences`", code="no_silence"
            )
        silence.removed_at = utcnow()
        s.add(audit_entry(actor, "alert_unsilenced", role=role, silence=silence_id))
        return silence_json(silence)
