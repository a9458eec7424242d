"""The assistant's tools on what happened: maintenance history, predictions, alerts, model
versions and the audit log (a part of ``Toolbox``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from pitstop.assistant.records import ToolResult, iso
from pitstop.store import Alert, AuditEntry, Prediction, WorkOrder

if TYPE_CHECKING:
    from pitstop.lake import Lake
    from pitstop.store import Database

log = logging.getLogger(__name__)

SCAN = 2000  # the newest audit entries searched for one work order's or machine's


class HistoryTools:
    """Read-only tools over the lake's events, the predictions index, alerts, the registry and
    the audit log."""

    db: Database
    lake: Lake
    versions_for: Callable[[str], list[dict[str, Any]]]

    def maintenance_history(self, machine_id: str, limit: int = 10) -> ToolResult:
        """A machine's failures, maintenance and inspections (the lake's events), newest first."""
        args = {"machine_id": machine_id, "limit": limit}
        try:
            frame = self.lake.read(
                "events", columns=["ts", "kind", "component", "detail"], machine_ids=[machine_id]
            )
        except Exception as exc:  # an empty or unreadable events table: no history to state
            log.debug("events unreadable for the assistant: %s", exc)
            frame = None
        events: list[dict[str, Any]] = []
        if frame is not None and frame.height:
            for ts, kind, component, detail in frame.sort("ts", descending=True).head(limit).iter_rows():
                events.append(
                    {"ts": iso(ts), "kind": kind, "component": component, "detail": _detail_text(detail)}
                )
        total = frame.height if frame is not None else 0
        data = {"machine_id": machine_id, "count": total, "events": events}
        source = {
            "kind": "events",
            "id": machine_id,
            "url": f"/machines/{machine_id}",
            "title": f"maintenance history of {machine_id}",
        }
        return ToolResult("maintenance_history", args, data, [source])

    def prediction_history(self, machine_id: str, limit: int = 10) -> ToolResult:
        """A machine's latest predictions (RUL and interval), oldest of them first."""
        args = {"machine_id": machine_id, "limit": limit}
        with self.db.session() as s:
            rows = s.execute(
                select(
                    Prediction.ts,
                    Prediction.seq,
                    Prediction.rul,
                    Prediction.rul_lower,
                    Prediction.rul_upper,
                    Prediction.model_version,
                )
                .where(Prediction.machine_id == machine_id, Prediction.arm == "champion")
                .order_by(Prediction.id.desc())
                .limit(limit)
            ).all()
        points: list[dict[str, Any]] = [
            {"ts": iso(ts), "seq": seq, "rul": rul, "rul_lower": lo, "rul_upper": up, "model_version": v}
            for ts, seq, rul, lo, up, v in reversed(rows)
        ]
        data: dict[str, Any] = {"machine_id": machine_id, "count": len(points), "predictions": points}
        if len(points) >= 2:
            data["change"] = points[-1]["rul"] - points[0]["rul"]
        source = {
            "kind": "predictions",
            "id": machine_id,
            "url": f"/api/v1/machines/{machine_id}/predictions",
            "title": f"prediction history of {machine_id}",
        }
        return ToolResult("prediction_history", args, data, [source])

    def alerts(self, kind: str | None = None, machine_type: str | None = None) -> ToolResult:
        """Firing alerts (drift, data quality, performance, …), newest first."""
        args = {"kind": kind, "machine_type": machine_type}
        with self.db.session() as s:
            query = select(Alert).where(Alert.status == "firing").order_by(Alert.last_at.desc())
            if kind is not None:
                query = query.where(Alert.kind == kind)
            if machine_type is not None:
                query = query.where(Alert.machine_type == machine_type)
            rows = s.scalars(query.limit(20)).all()
            alerts = [
                {
                    "id": a.id,
                    "kind": a.kind,
                    "severity": a.severity,
                    "machine_type": a.machine_type,
                    "machine_id": a.machine_id,
                    "summary": a.summary,
                    "since": iso(a.first_at),
                    "count": a.count,
                }
                for a in rows
            ]
        data = {"firing": len(alerts), "alerts": alerts}
        source = {"kind": "alerts", "id": kind or "all", "url": "/api/v1/alerts", "title": "firing alerts"}
        return ToolResult("alerts", args, data, [source])

    def model_versions(self, machine_type: str) -> ToolResult:
        """The machine type's champion, challenger and previous model versions (the registry)."""
        args = {"machine_type": machine_type}
        try:
            versions = self.versions_for(machine_type)
            problem = None
        except Exception as exc:  # the registry is down: say so rather than guess
            versions, problem = [], str(getattr(exc, "message", exc))
        by_alias = {alias: v for v in versions for alias in v.get("aliases", [])}
        data: dict[str, Any] = {"machine_type": machine_type, "registry_available": problem is None}
        for alias in ("champion", "challenger", "previous"):
            found = by_alias.get(alias)
            data[alias] = (
                {"version": str(found["version"]), "created_at": _registered(found.get("created_at"))}
                if found
                else None
            )
        data["versions"] = len(versions)
        source = {"kind": "models", "id": machine_type, "url": "/models", "title": f"{machine_type} models"}
        return ToolResult("model_versions", args, data, [source])

    def audit_log(
        self,
        work_order: int | None = None,
        machine_id: str | None = None,
        actor: str | None = None,
        limit: int = 10,
    ) -> ToolResult:
        """Who did what: the audit log, newest first, optionally about one work order, machine or
        actor."""
        args = {"work_order": work_order, "machine_id": machine_id, "actor": actor, "limit": limit}
        with self.db.session() as s:
            query = select(AuditEntry).order_by(AuditEntry.id.desc())
            if actor is not None:
                query = query.where(AuditEntry.actor == actor)
            # the detail is JSON text: a LIKE narrows the rows (wildcards escaped), the parsed
            # detail decides ("work_order": 1 must not match 10)
            if work_order is not None:
                query = query.where(AuditEntry.detail.like(f"%{_like(str(work_order))}%", escape="\\"))
            # a machine's entries name it, or one of its work orders (a transition names the order)
            orders: set[str] = set()
            if machine_id is not None:
                found = s.scalars(select(WorkOrder.id).where(WorkOrder.machine_id == machine_id))
                orders = {str(i) for i in found}
            filtered = work_order is not None or machine_id is not None
            rows = s.scalars(query.limit(SCAN if filtered else limit)).all()
            entries = []
            for e in rows:
                detail = json.loads(e.detail or "{}")
                if work_order is not None and str(detail.get("work_order")) != str(work_order):
                    continue
                if machine_id is not None and not (
                    machine_id in {str(v) for v in detail.values()} or str(detail.get("work_order")) in orders
                ):
                    continue
                entries.append(
                    {
                        "id": e.id,
                        "ts": iso(e.ts),
                        "actor": e.actor,
                        "role": e.role,
                        "action": e.action,
                        "detail": detail,
                    }
                )
                if len(entries) == limit:
                    break
        data = {"entries": entries}
        source = {"kind": "audit", "id": str(entries[0]["id"]) if entries else "none", "url": "/audit"}
        source["title"] = "the audit log"
        return ToolResult("audit_log", args, data, [source])


def _like(text: str) -> str:
    """``text`` for a LIKE pattern, its wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _registered(stamp: Any) -> str | None:
    """MLflow's creation timestamp (ms since the epoch) as ISO 8601."""
    if stamp is None or stamp == "":
        return None
    if isinstance(stamp, (int, float)):
        return iso(datetime.fromtimestamp(stamp / 1000, UTC))
    return str(stamp)


def _detail_text(detail: str | None) -> str | None:
    """An event's detail as a short text (a work order's closing detail is JSON)."""
    if not detail:
        return None
    try:
        parsed = json.loads(detail)
    except ValueError:
        return detail[:300]
    if isinstance(parsed, dict):
        parts = [f"{k} {v}" for k, v in parsed.items() if v not in (None, "")]
        return ", ".join(parts)[:300]
    return str(parsed)[:300]
