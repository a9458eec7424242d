"""The assistant's tools: read-only calls on live state, each returning its data and its sources.

Every fact an answer states comes from a ``ToolResult``: the template path formats the data, the
LLM path is handed it as the tool's JSON, and ``grounding`` checks an answer against it. A tool
never writes; actions are in ``actions`` and only follow a confirmed user turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from pitstop.assistant.records import ToolResult, iso
from pitstop.assistant.tools_history import HistoryTools
from pitstop.assistant.tools_manuals import ManualTools
from pitstop.maintenance import OPEN_STATES, RiskPolicy, work_order_json
from pitstop.store import Machine, MachineState, WorkOrder

if TYPE_CHECKING:
    from pitstop.assistant.knowledge import KnowledgeBase
    from pitstop.lake import Lake
    from pitstop.platform import Platform
    from pitstop.schema import FleetSchema
    from pitstop.store import Database

log = logging.getLogger(__name__)

VERSIONS_TTL_S = 10.0  # the registry's answer is kept this long (an MLflow call costs ~100 ms)


def machine_status(policy: RiskPolicy, lifecycle: str, rul: float | None, lower: float | None) -> str:
    """A machine's status as the API and dashboard show it: retired, no_data, at_risk or ok,
    judged by its own type's policy on the interval's lower bound."""
    if lifecycle == "retired":
        return "retired"
    if rul is None:
        return "no_data"
    return "at_risk" if policy.at_risk(lower if lower is not None else rul) else "ok"


class Toolbox(HistoryTools, ManualTools):
    """Read-only tools over the ops DB, the lake's events, the registry and the manuals."""

    def __init__(
        self,
        db: Database,
        lake: Lake,
        fleet: FleetSchema,
        policy_for: Callable[[str], RiskPolicy],
        versions_for: Callable[[str], list[dict[str, Any]]],
        knowledge: KnowledgeBase,
        interval_coverage: float,
    ) -> None:
        self.db = db
        self.lake = lake
        self.fleet = fleet
        self.policy_for = policy_for
        self.versions_for = versions_for
        self.knowledge = knowledge
        self.coverage = interval_coverage
        self._vocabulary: str | None = None

    @classmethod
    def from_platform(cls, platform: Platform, knowledge: KnowledgeBase) -> Toolbox:
        cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

        def versions(machine_type: str) -> list[dict[str, Any]]:
            """The registry's versions, read at most every ``VERSIONS_TTL_S`` per type."""
            now = time.monotonic()
            kept = cache.get(machine_type)
            if kept is None or now - kept[0] > VERSIONS_TTL_S:
                kept = (now, platform.deployment_for(machine_type).registry.versions())
                cache[machine_type] = kept
            return kept[1]

        return cls(
            platform.db,
            platform.lake,
            platform.fleet,
            platform.policy_for,
            versions,
            knowledge,
            platform.settings.interval_coverage,
        )

    # -- lookups the understanding step needs (not tools: they state no fact) -----------------

    def machine_ids(self) -> tuple[dict[str, str], set[str]]:
        """Every machine id in the fleet (lower-cased → as stored), and those in service: one
        query per message."""
        with self.db.session() as s:
            rows = s.execute(select(Machine.machine_id, Machine.status)).all()
        return {m.lower(): m for m, _ in rows}, {m for m, status in rows if status == "active"}

    def candidates(self, phrase: str, machine_ids: list[str]) -> ToolResult:
        """Machines a phrase like "engine 7" may mean (more than one matched)."""
        data = {"phrase": phrase, "machine_ids": machine_ids}
        return ToolResult("candidates", {"phrase": phrase}, data, [_machine_source(m) for m in machine_ids])

    def machine_types(self) -> list[str]:
        return list(self.fleet.machine_types)

    def vocabulary(self) -> str:
        """Everything the fleet's configuration and manuals name, lower case (kept once built)."""
        if self._vocabulary is None:
            words = []
            for name, mt in self.fleet.machine_types.items():
                words += [name, mt.description, *mt.component_names]
                words += [f"{c.description} {c.name}" for c in mt.components]
            words += [f"{s.title} {s.text}" for s in self.knowledge.sections]
            self._vocabulary = " ".join(words).lower()
        return self._vocabulary

    def fleet_types(self) -> ToolResult:
        """The fleet's machine types with their time units."""
        types = {name: mt.time_unit for name, mt in self.fleet.machine_types.items()}
        data = {"machine_types": list(types), "time_units": types}
        return ToolResult(
            "fleet_types", {}, data, [{"kind": "fleet", "id": "machine_types", "url": "/models"}]
        )

    def time_unit(self, machine_type: str | None) -> str:
        known = self.fleet.machine_types.get(machine_type or "")
        return known.time_unit if known is not None else "time units"

    # -- tools ----------------------------------------------------------------------------------

    def machine(self, machine_id: str) -> ToolResult:
        """One machine: type, status, predicted RUL with its interval, threshold, open work order."""
        args = {"machine_id": machine_id}
        with self.db.session() as s:
            machine = s.get(Machine, machine_id)
            if machine is None:
                return ToolResult("machine", args, {"found": False, "machine_id": machine_id})
            state = s.get(MachineState, machine_id)
            order = s.scalars(
                select(WorkOrder)
                .where(WorkOrder.machine_id == machine_id, WorkOrder.status.in_(OPEN_STATES))
                .order_by(WorkOrder.id.desc())
            ).first()
            order_json = _order_brief(order) if order is not None else None
        policy = self.policy_for(machine.machine_type)
        rul = state.predicted_rul if state is not None else None
        lower = state.rul_lower if state is not None else None
        data = {
            "found": True,
            "machine_id": machine.machine_id,
            "machine_type": machine.machine_type,
            "lifecycle": machine.status,
            "status": machine_status(policy, machine.status, rul, lower),
            "predicted_rul": rul,
            "rul_lower": lower,
            "rul_upper": state.rul_upper if state is not None else None,
            "interval_coverage_percent": round(self.coverage * 100),
            "threshold": policy.threshold,
            "time_unit": self.time_unit(machine.machine_type),
            "model_version": state.model_version if state is not None else None,
            "readings": state.readings if state is not None else 0,
            "last_reading_ts": iso(state.last_ts) if state is not None else None,
            "scored_at": iso(state.scored_at) if state is not None else None,
            "open_work_order": order_json,
        }
        sources = [_machine_source(machine.machine_id)]
        if order_json is not None:
            sources.append(_order_source(order_json["id"], machine.machine_id))
        return ToolResult("machine", args, data, sources)

    def at_risk(self, machine_type: str | None = None, limit: int = 5) -> ToolResult:
        """Active machines ordered by the lower bound of their RUL interval, each judged by its
        own type's policy; ``at_risk`` lists those under their threshold."""
        args = {"machine_type": machine_type, "limit": limit}
        with self.db.session() as s:
            query = (
                select(
                    Machine.machine_id,
                    Machine.machine_type,
                    MachineState.predicted_rul,
                    MachineState.rul_lower,
                    MachineState.rul_upper,
                )
                .join(MachineState, MachineState.machine_id == Machine.machine_id)
                .where(Machine.status == "active", MachineState.predicted_rul.is_not(None))
            )
            if machine_type is not None:
                query = query.where(Machine.machine_type == machine_type)
            rows = s.execute(query).all()
        machines: list[dict[str, Any]] = []
        for machine_id, mtype, rul, lower, upper in rows:
            policy = self.policy_for(mtype)
            low = lower if lower is not None else (rul or 0.0)
            machines.append(
                {
                    "machine_id": machine_id,
                    "machine_type": mtype,
                    "predicted_rul": rul,
                    "rul_lower": low,
                    "rul_upper": upper,
                    "threshold": policy.threshold,
                    "time_unit": self.time_unit(mtype),
                    "at_risk": policy.at_risk(low),
                }
            )
        machines.sort(key=lambda m: (m["rul_lower"] / max(m["threshold"], 1e-9), m["machine_id"]))
        risky = [m for m in machines if m["at_risk"]]
        data = {
            "scored": len(machines),
            "at_risk_count": len(risky),
            "at_risk": risky[:limit],
            "lowest": machines[:limit],
            "highest": machines[::-1][:limit],
        }
        shown = risky[:limit] or machines[:limit]
        sources = [{"kind": "fleet", "id": "machines", "url": "/api/v1/machines", "title": "the fleet"}]
        sources += [_machine_source(m["machine_id"]) for m in shown]
        return ToolResult("at_risk", args, data, sources)

    def fleet_summary(self, machine_type: str | None = None) -> ToolResult:
        """How many machines per type and status, and how many open work orders."""
        args = {"machine_type": machine_type}
        with self.db.session() as s:
            query = select(
                Machine.machine_id,
                Machine.machine_type,
                Machine.status,
                MachineState.predicted_rul,
                MachineState.rul_lower,
            ).outerjoin(MachineState, MachineState.machine_id == Machine.machine_id)
            if machine_type is not None:
                query = query.where(Machine.machine_type == machine_type)
            rows = s.execute(query).all()
            orders = s.execute(
                select(Machine.machine_type, func.count())
                .select_from(WorkOrder)
                .join(Machine, Machine.machine_id == WorkOrder.machine_id)
                .where(WorkOrder.status.in_(OPEN_STATES))
                .group_by(Machine.machine_type)
            ).all()
        types: dict[str, dict[str, Any]] = {}
        for _, mtype, lifecycle, rul, lower in rows:
            entry = types.setdefault(
                mtype,
                {
                    "machines": 0,
                    "active": 0,
                    "at_risk": 0,
                    "ok": 0,
                    "no_data": 0,
                    "retired": 0,
                    "open_work_orders": 0,
                    "time_unit": self.time_unit(mtype),
                    "threshold": self.policy_for(mtype).threshold,
                    "lead_time": self.policy_for(mtype).lead_time,
                },
            )
            entry["machines"] += 1
            entry["active"] += lifecycle == "active"
            entry[machine_status(self.policy_for(mtype), lifecycle, rul, lower)] += 1
        for mtype, n in orders:
            if mtype in types:
                types[mtype]["open_work_orders"] = n
        data = {"machine_types": types, "machines": sum(t["machines"] for t in types.values())}
        sources = [{"kind": "fleet", "id": "machines", "url": "/api/v1/machines", "title": "the fleet"}]
        return ToolResult("fleet_summary", args, data, sources)

    def work_orders(
        self,
        status: str = "open",
        machine_id: str | None = None,
        machine_type: str | None = None,
        priority: str | None = None,
        limit: int = 10,
    ) -> ToolResult:
        """Work orders, most urgent first (open ones by due date), newest first for closed ones."""
        args = {
            "status": status,
            "machine_id": machine_id,
            "machine_type": machine_type,
            "priority": priority,
            "limit": limit,
        }
        with self.db.session() as s:
            query = select(WorkOrder, Machine.machine_type).join(
                Machine, Machine.machine_id == WorkOrder.machine_id
            )
            if status == "open":
                query = query.where(WorkOrder.status.in_(OPEN_STATES)).order_by(
                    WorkOrder.due_at, WorkOrder.id
                )
            else:
                if status == "closed":
                    query = query.where(WorkOrder.status.not_in(OPEN_STATES))
                elif status != "all":
                    query = query.where(WorkOrder.status == status)
                query = query.order_by(WorkOrder.id.desc())
            if machine_id is not None:
                query = query.where(WorkOrder.machine_id == machine_id)
            if machine_type is not None:
                query = query.where(Machine.machine_type == machine_type)
            if priority is not None:
                query = query.where(WorkOrder.priority == priority)
            rows = s.execute(query).all()
            orders = [{**_order_brief(o), "machine_type": t, "time_unit": self.time_unit(t)} for o, t in rows]
        data = {"count": len(orders), "work_orders": orders[:limit]}
        sources = [_order_source(o["id"], o["machine_id"]) for o in orders[:limit]]
        if not sources:
            sources = [{"kind": "work_orders", "id": status, "url": "/work-orders", "title": "work orders"}]
        return ToolResult("work_orders", args, data, sources)

    def work_order(self, order_id: int) -> ToolResult:
        """One work order with its explanation, component, procedure and lifecycle."""
        args = {"order_id": order_id}
        with self.db.session() as s:
            order = s.get(WorkOrder, order_id)
            if order is None:
                return ToolResult("work_order", args, {"found": False, "id": order_id})
            machine = s.get(Machine, order.machine_id)
            body = work_order_json(order)
        mtype = machine.machine_type if machine is not None else None
        data = {"found": True, **body, "machine_type": mtype, "time_unit": self.time_unit(mtype)}
        return ToolResult("work_order", args, data, [_order_source(order_id, body["machine_id"])])


def _order_brief(order: WorkOrder) -> dict[str, Any]:
    return {
        "id": order.id,
        "machine_id": order.machine_id,
        "status": order.status,
        "priority": order.priority,
        "predicted_rul": order.predicted_rul,
        "rul_lower": order.rul_lower,
        "rul_upper": order.rul_upper,
        "due_at": iso(order.due_at),
        "opened_at": iso(order.opened_at),
        "closed_at": iso(order.closed_at),
        "component": order.component,
        "procedure": order.procedure,
        "finding": order.finding,
        "technician": order.technician,
    }


def _machine_source(machine_id: str) -> dict[str, Any]:
    return {"kind": "machine", "id": machine_id, "url": f"/machines/{machine_id}", "title": machine_id}


def _order_source(order_id: int, machine_id: str) -> dict[str, Any]:
    return {
        "kind": "work_order",
        "id": str(order_id),
        "url": f"/machines/{machine_id}",
        "title": f"work order WO-{order_id} on {machine_id}",
    }
