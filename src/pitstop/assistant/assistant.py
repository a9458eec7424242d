from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from pitstop.assistant.knowledge import KnowledgeBase
from pitstop.maintenance import OPEN_STATES, RiskPolicy
from pitstop.store import Database, Machine, MachineState, WorkOrder

_MACHINE_ID = re.compile(r"\b([a-z]+-\d{3})\b", re.I)
_MACHINE_NUMBER = re.compile(r"\b(?:engine|machine|unit)\s*#?\s*(\d{1,3})\b", re.I)
_FLEET = re.compile(r"\b(risk|risky|worst|attention|fleet|urgent|soonest|which (?:machines|engines))\b", re.I)
_ORDERS = re.compile(r"\bwork[- ]?orders?\b|\bopen orders?\b", re.I)


@dataclass
class Answer:
    text: str
    sources: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.text, "sources": self.sources}


class Assistant:
    """Answers maintenance questions from live fleet state (ops DB) and the manuals.

    It uses tools, not guesses: machine lookups, the at-risk list, open work orders and a BM25
    search of the manuals. Every fact in an answer comes with its source.
    """

    def __init__(
        self, db: Database, policy: RiskPolicy, knowledge: KnowledgeBase, live_prefix: str = "eng"
    ) -> None:
        self.db = db
        self.policy = policy
        self.knowledge = knowledge
        self.live_prefix = live_prefix

    def ask(self, question: str) -> Answer:
        question = question.strip()
        if not question:
            return Answer(
                "Ask me about a machine (e.g. eng-031), the machines at risk, open work orders "
                "or a procedure."
            )
        parts: list[str] = []
        sources: list[dict[str, str]] = []
        ids = {m.lower() for m in _MACHINE_ID.findall(question)}
        ids |= {f"{self.live_prefix}-{int(n):03d}" for n in _MACHINE_NUMBER.findall(question)}
        for machine_id in sorted(ids):
            self._machine(machine_id, parts, sources)
        if _FLEET.search(question) and not ids:
            self._at_risk(parts, sources)
        if _ORDERS.search(question) and not ids:
            self._orders(parts, sources)
        for score, section in self.knowledge.search(question, k=2 if not parts else 1):
            if score < 1.0:
                continue
            parts.append(f"From the manual, “{section.title}”: {_excerpt(section.text)}")
            sources.append(
                {"kind": "manual", "id": f"{section.source}#{section.anchor}", "title": section.title}
            )
        if not parts:
            return Answer(
                "I found nothing about that in the fleet state or the manuals. Ask about a machine "
                "(e.g. eng-031), the machines at risk, open work orders, a symptom or a procedure."
            )
        return Answer("\n\n".join(parts), sources)

    def _machine(self, machine_id: str, parts: list[str], sources: list[dict[str, str]]) -> None:
        with self.db.session() as s:
            machine = s.get(Machine, machine_id)
            state = s.get(MachineState, machine_id)
            order = s.scalars(
                select(WorkOrder)
                .where(WorkOrder.machine_id == machine_id, WorkOrder.status.in_(OPEN_STATES))
                .order_by(WorkOrder.id.desc())
            ).first()
        if machine is None:
            parts.append(f"There is no machine {machine_id} in the fleet.")
            return
        sources.append({"kind": "machine", "id": machine_id, "url": f"/machines/{machine_id}"})
        if state is None or state.predicted_rul is None:
            parts.append(
                f"{machine_id} ({machine.machine_type}, {machine.status}) has no scored readings yet."
            )
            return
        lower = state.rul_lower if state.rul_lower is not None else state.predicted_rul
        verdict = "below" if self.policy.at_risk(lower) else "above"
        text = (
            f"{machine_id} has a predicted remaining useful life of {state.predicted_rul:.0f} cycles "
            f"(80% interval {state.rul_lower:.0f}–{state.rul_upper:.0f}); "
            f"its lower bound is {verdict} the work-order threshold of {self.policy.threshold:g}, "
            f"from model version {state.model_version} after "
            f"{state.readings} readings (last at seq {state.last_seq})."
        )
        if order is not None:
            text += f" Work order #{order.id} is {order.status} with {order.priority} priority."
            sources.append({"kind": "work_order", "id": str(order.id), "url": f"/machines/{machine_id}"})
        parts.append(text)

    def _at_risk(self, parts: list[str], sources: list[dict[str, str]], k: int = 5) -> None:
        with self.db.session() as s:
            rows = s.execute(
                select(MachineState.machine_id, MachineState.predicted_rul, MachineState.rul_lower)
                .join(Machine, Machine.machine_id == MachineState.machine_id)
                .where(Machine.status == "active", MachineState.predicted_rul.is_not(None))
                .order_by(MachineState.predicted_rul)
                .limit(k)
            ).all()
        if not rows:
            parts.append("No machine has been scored yet.")
            return
        listed = ", ".join(f"{m} (RUL {rul:.0f}, lower bound {lo:.0f})" for m, rul, lo in rows)
        parts.append(f"The {len(rows)} machines with the lowest predicted RUL are: {listed}.")
        sources.append({"kind": "fleet", "id": "machines", "url": "/api/v1/machines"})

    def _orders(self, parts: list[str], sources: list[dict[str, str]], k: int = 10) -> None:
        with self.db.session() as s:
            orders = s.scalars(
                select(WorkOrder)
                .where(WorkOrder.status.in_(OPEN_STATES))
                .order_by(WorkOrder.predicted_rul)
                .limit(k)
            ).all()
        if not orders:
            parts.append("There are no open work orders.")
            return
        listed = "; ".join(
            f"#{o.id} {o.machine_id} ({o.priority}, RUL {o.predicted_rul:.0f})" for o in orders
        )
        parts.append(f"Open work orders, most urgent first: {listed}.")
        sources.extend(
            {"kind": "work_order", "id": str(o.id), "url": f"/machines/{o.machine_id}"} for o in orders
        )


def _excerpt(text: str, limit: int = 420) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + " …"
