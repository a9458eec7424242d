"""Asking the set through the API, and the report: scores per category and fleet, latency, failures."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pitstop.assistant.evaluation.cases import REFUSALS, Case
from pitstop.assistant.evaluation.facts import check_cite, check_fact, foreign_manuals, invented
from pitstop.assistant.evaluation.snapshot import Call, Snapshot
from pitstop.assistant.tools import Toolbox
from pitstop.errors import ValidationError


@dataclass
class Outcome:
    case: str
    category: str
    fleet: str
    turn: int
    question: str
    answer: str
    correct: bool
    missing: list[str]
    invented: list[str]
    ms: float
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "category": self.category,
            "fleet": self.fleet,
            "turn": self.turn,
            "question": self.question,
            "answer": self.answer,
            "correct": self.correct,
            "missing": self.missing,
            "invented": self.invented,
            "ms": round(self.ms, 1),
            "sources": [f"{s.get('kind')}:{s.get('id')}" for s in self.sources],
        }


def run_case(case: Case, call: Call, tools: Toolbox | None = None) -> list[Outcome]:
    """Ask one conversation through the API and score each of its turns."""
    snap = Snapshot.read(call)
    conversation: str | None = None
    asked = ""
    outcomes: list[Outcome] = []
    for i, turn in enumerate(case.turns):
        try:
            question = snap.fill(turn.ask)
        except ValidationError as exc:  # this fleet has no such machine or order: not askable
            outcomes.append(
                Outcome(
                    case.id, case.category, case.fleet, i + 1, turn.ask, "", False, [exc.message], [], 0.0
                )
            )
            break
        asked += "\n" + question
        body: dict[str, Any] = {"message": question}
        if conversation:
            body["conversation_id"] = conversation
        started = time.perf_counter()
        code, reply = call("POST", "/api/v1/assistant/chat", case.role, body)
        ms = (time.perf_counter() - started) * 1000
        if code != 200:
            outcomes.append(
                Outcome(
                    case.id,
                    case.category,
                    case.fleet,
                    i + 1,
                    question,
                    f"HTTP {code}: {reply}",
                    False,
                    [f"HTTP {code}"],
                    [],
                    ms,
                )
            )
            break
        conversation = reply["conversation_id"]
        answer, sources = reply["answer"], reply["sources"]
        machine = snap.fill(turn.machine) if turn.machine else None
        order = snap.fill(turn.order) if turn.order else None
        missing = [m for f in turn.facts if (m := check_fact(f, answer, snap, machine, order)) is not None]
        missing += [
            f"cite {m}" for c in turn.cites if (m := check_cite(c, sources, snap, machine, order)) is not None
        ]
        if turn.refuse and not REFUSALS[turn.refuse].search(answer):
            missing.append(f"refusal ({turn.refuse})")
        for text in turn.absent:
            absent = snap.fill(text)
            if absent.lower() in answer.lower():
                missing.append(f"must not say “{absent}”")
        if turn.action is not None:
            want = {k: snap.fill(str(v)) for k, v in turn.action.items()}
            if not any(all(str(a.get(k)) == v for k, v in want.items()) for a in reply["actions"]):
                missing.append(f"action {want}")
        if turn.after is not None:
            missing += _check_after(turn.after, call, snap)
        missing += foreign_manuals(sources, snap)
        bad = invented(answer, sources, snap, asked, tools)
        outcomes.append(
            Outcome(
                case.id,
                case.category,
                case.fleet,
                i + 1,
                question,
                answer,
                not missing,
                missing,
                bad,
                ms,
                sources,
            )
        )
    return outcomes


def _check_after(after: dict[str, Any], call: Call, snap: Snapshot) -> list[str]:
    """The API's view after an action (or a refused or cancelled one): a work order's status,
    finding and technician (``order``), or whether an event was recorded (``event``: its kind,
    ``machine``, ``actor``, ``recorded`` true or false), counted in the audit log against the
    case's start."""
    if "event" in after:
        return _check_event(after, call, snap)
    order_id = int(snap.fill(str(after["order"])))
    _, body = call("GET", "/api/v1/work-orders?status=all&limit=5000", "admin", None)
    found = next((o for o in body["work_orders"] if int(o["id"]) == order_id), None)
    if found is None:
        return [f"after: WO-{order_id} missing"]
    problems = []
    for key in ("status", "finding", "technician"):
        if key in after and str(found.get(key)) != snap.fill(str(after[key])):
            problems.append(f"after: WO-{order_id} {key} is {found.get(key)}, expected {after[key]}")
    return problems


def _check_event(after: dict[str, Any], call: Call, snap: Snapshot) -> list[str]:
    kind, machine = str(after["event"]), snap.fill(str(after["machine"]))
    actor = snap.fill(str(after["actor"])) if "actor" in after else None

    def count(entries: list[dict[str, Any]]) -> int:
        return sum(
            e["action"] == "event_recorded"
            and (e.get("detail") or {}).get("kind") == kind
            and (e.get("detail") or {}).get("machine_id") == machine
            and (actor is None or e["actor"] == actor)
            for e in entries
        )

    _, body = call("GET", "/api/v1/audit?limit=1000", "admin", None)
    added = count(body["entries"]) - count(snap.extra["audit"])
    if bool(after.get("recorded", True)) != (added > 0):
        return [
            f"after: {added} {kind} event(s) of {machine} recorded, expected {after.get('recorded', True)}"
        ]
    return []


@dataclass
class Report:
    outcomes: list[Outcome]

    @property
    def questions(self) -> int:
        return len(self.outcomes)

    @property
    def correct(self) -> int:
        return sum(o.correct for o in self.outcomes)

    @property
    def invented(self) -> int:
        return sum(bool(o.invented) for o in self.outcomes)

    def percentile(self, q: float) -> float:
        times = sorted(o.ms for o in self.outcomes)
        if not times:
            return 0.0
        if len(times) == 1:
            return times[0]
        return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1]

    def by(self, key: str) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[Outcome]] = {}
        for o in self.outcomes:
            groups.setdefault(getattr(o, key), []).append(o)
        return {
            name: {
                "questions": len(g),
                "correct": sum(o.correct for o in g),
                "score": round(sum(o.correct for o in g) / len(g), 3),
                "invented": sum(bool(o.invented) for o in g),
            }
            for name, g in sorted(groups.items())
        }

    def summary(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "correct": self.correct,
            "score": round(self.correct / max(1, self.questions), 3),
            "invented": self.invented,
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "by_category": self.by("category"),
            "by_fleet": self.by("fleet"),
        }

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.correct or o.invented]

    def headline(self) -> str:
        s = self.summary()
        return (
            f"{s['correct']}/{s['questions']} correct ({s['score']:.1%}), "
            f"{s['invented']} with invented facts, latency p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms"
        )

    def text(self) -> str:
        s = self.summary()
        lines = [self.headline()]
        for name, g in s["by_category"].items():
            score = f"{g['correct']:>3}/{g['questions']:<3} {g['score']:.0%}"
            lines.append(f"  {name:<10} {score}  invented {g['invented']}")
        for name, g in s["by_fleet"].items():
            lines.append(f"  fleet {name:<10} {g['correct']:>3}/{g['questions']:<3} {g['score']:.0%}")
        for o in self.failures():
            lines.append(f"- {o.case}#{o.turn} [{o.category}] {o.question!r}")
            lines.append(f"    answer: {o.answer}")
            if o.missing:
                lines.append(f"    missing: {'; '.join(o.missing)}")
            if o.invented:
                lines.append(f"    invented: {'; '.join(o.invented)}")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The failing answers, for whoever fixes the engine: question, answer, what was missing."""
        s = self.summary()
        lines = [
            "# Assistant evaluation: failing answers",
            "",
            self.headline() + ".",
            "",
            "| category | correct | invented |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {g['correct']}/{g['questions']} | {g['invented']} |"
            for name, g in s["by_category"].items()
        ]
        for o in self.failures():
            lines += [
                "",
                f"## {o.case} turn {o.turn} ({o.category}, {o.fleet})",
                "",
                f"Question: {o.question}",
                "",
            ]
            lines += ["Answer:", "", *[f"> {line}" if line else ">" for line in o.answer.splitlines()], ""]
            cited = ", ".join(f"{x.get('kind')}:{x.get('id')}" for x in o.sources) or "none"
            lines.append(f"Sources: {cited}")
            if o.missing:
                lines.append(f"Missing: {'; '.join(o.missing)}")
            if o.invented:
                lines.append(f"Invented: {'; '.join(o.invented)}")
        return "\n".join(lines) + "\n"


def run_set(cases: Iterable[Case], call: Call, tools: Toolbox | None = None) -> Report:
    outcomes: list[Outcome] = []
    for case in cases:
        outcomes += run_case(case, call, tools)
    return Report(outcomes)
