"""Measure the assistant: an evaluation set of conversations, scored by facts and citations.

A case is a conversation (one or more turns) asked as a user of some role, written in YAML
(``tests/assistant_eval/*.yaml``). Each turn names what a correct answer holds: facts (a machine's
predicted RUL, its open work order, a count …), citations (the machine, a manual section …), a
refusal family, an action and its effect. The expected values are never written down: they are
read from the live API when the case starts (``Snapshot``), so the set holds on any fleet built by
the same seed, whatever the clock.

A turn is correct when every expected fact appears in the answer (numbers as the answer rounds
them, ids exactly), every expected citation is among its ``sources``, the refusal or action
expected is there, and the API shows the action's effect. Apart from correctness, every answer
is checked for invented facts: facts no tool result holds (``grounding``, against the tools
called afresh on the same state) and machine or work-order ids the live API does not know.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitstop.assistant.grounding import allowed, unsupported, when
from pitstop.assistant.tools import Toolbox, ToolResult
from pitstop.errors import ValidationError

# (method, path, role, json body) -> (status code, JSON body)
Call = Callable[[str, str, str, dict[str, Any] | None], tuple[int, Any]]

REFUSALS = {
    "unknown_machine": re.compile(
        r"\bno machine\b|\bnot in the fleet\b|\bunknown machine\b|\bdoes not exist\b|\bno such machine\b", re.I
    ),
    "role": re.compile(r"\byour role\b.*\bcannot\b|\bnot allowed\b|\bno permission\b|\bnot permitted\b", re.I),
    "unknown_order": re.compile(r"\bno work order\b|\bdoes not exist\b|\bnot found\b", re.I),
    "cannot_move": re.compile(r"\bcannot change\b|\bcan only\b|\balready\b", re.I),
    "nothing_pending": re.compile(r"\bnothing (?:is )?waiting\b|\bnothing to confirm\b", re.I),
    "which": re.compile(r"\bwhich\b.*\?", re.I | re.S),
}
_WO = re.compile(r"\bWO-(\d+)\b")
_PLACEHOLDER = re.compile(r"\{([a-z_0-9]+)\}")


# -- the set ----------------------------------------------------------------------------------


@dataclass
class Expect:
    """What one turn's answer must hold. Strings may hold ``{placeholders}`` (``Snapshot``)."""

    ask: str
    machine: str | None = None  # the subject of machine facts
    order: str | None = None  # the subject of work-order facts
    facts: list[Any] = field(default_factory=list)
    cites: list[str] = field(default_factory=list)
    refuse: str | None = None
    absent: list[str] = field(default_factory=list)  # strings the answer must not hold
    action: dict[str, Any] | None = None  # {type, state} among the reply's actions
    after: dict[str, Any] | None = None  # the API's view after the turn: {order, status, finding}


@dataclass
class Case:
    id: str
    fleet: str
    category: str
    role: str
    turns: list[Expect]
    source: str = ""


CATEGORIES = ("fleet", "procedure", "combined", "follow_up", "refusal", "action")
_TURN_KEYS = {"ask", "machine", "order", "facts", "cites", "refuse", "absent", "action", "after"}


def load_cases(paths: Iterable[Path]) -> list[Case]:
    """The cases of the YAML files, in order; a malformed case raises ``ValidationError``."""
    import yaml

    cases: list[Case] = []
    seen: set[str] = set()
    for path in paths:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        fleet = str(doc["fleet"])
        for raw in doc["cases"]:
            where = f"{Path(path).name}: case {raw.get('id')!r}"
            if raw.get("category") not in CATEGORIES:
                raise ValidationError(f"{where}: category must be one of {CATEGORIES}", code="bad_case")
            if raw["id"] in seen:
                raise ValidationError(f"{where}: the id is used twice", code="bad_case")
            seen.add(raw["id"])
            turns = []
            for t in raw["turns"]:
                unknown = set(t) - _TURN_KEYS
                if unknown:
                    raise ValidationError(f"{where}: unknown keys {sorted(unknown)}", code="bad_case")
                if not isinstance(t.get("ask"), str):
                    raise ValidationError(f"{where}: ask must be a string (quote yes/no)", code="bad_case")
                if t.get("refuse") and t["refuse"] not in REFUSALS:
                    raise ValidationError(f"{where}: unknown refusal {t['refuse']!r}", code="bad_case")
                turns.append(Expect(**t))
            cases.append(
                Case(raw["id"], fleet, raw["category"], raw.get("role", "technician"), turns, Path(path).name)
            )
    return cases


# -- what the live API says -------------------------------------------------------------------


@dataclass
class Snapshot:
    """The fleet as the API shows it when a case starts: machines, work orders, placeholders."""

    machines: dict[str, dict[str, Any]]  # every machine, any lifecycle
    orders: dict[int, dict[str, Any]]
    values: dict[str, str]  # placeholder -> value
    extra: dict[str, Any] = field(default_factory=dict)  # counts and versions

    @classmethod
    def read(cls, call: Call) -> Snapshot:
        _, body = call("GET", "/api/v1/machines?lifecycle=all&trend=0", "admin", None)
        machines = {m["machine_id"]: m for m in body["machines"]}
        _, body = call("GET", "/api/v1/work-orders?status=all&limit=5000", "admin", None)
        orders = {int(o["id"]): o for o in body["work_orders"]}
        _, body = call("GET", "/api/v1/audit?limit=1000", "admin", None)
        audit = body["entries"]
        _, models = call("GET", "/api/v1/models", "admin", None)
        return cls(machines, orders, {}, {"audit": audit, "models": models})._resolve()

    def _resolve(self) -> Snapshot:
        v = self.values
        active = [m for m in self.machines.values() if m["lifecycle"] == "active"]
        scored = [m for m in active if m["predicted_rul"] is not None]

        def urgency(m: dict[str, Any]) -> tuple[float, str]:
            low = (m["rul_interval"] or [m["predicted_rul"]])[0]
            low = m["predicted_rul"] if low is None else low
            return (low / max(m["threshold"], 1e-9), m["machine_id"])

        ranked = sorted(scored, key=urgency)
        for i, name in enumerate(("worst", "second_worst", "third_worst")):
            if len(ranked) > i:
                v[name] = ranked[i]["machine_id"]
        if ranked:
            v["healthiest"] = ranked[-1]["machine_id"]
            v["worst_number"] = _tail_number(ranked[0]["machine_id"])
            v["second_number"] = _tail_number(ranked[1]["machine_id"]) if len(ranked) > 1 else ""
        ok_free = [m for m in ranked if m["status"] == "ok" and m["open_work_order_id"] is None]
        if ok_free:
            v["ok_machine"] = ok_free[-1]["machine_id"]
            v["ok_number"] = _tail_number(ok_free[-1]["machine_id"])
        retired = sorted(m["machine_id"] for m in self.machines.values() if m["lifecycle"] == "retired")
        if retired:
            v["retired_machine"] = retired[0]
        by_status: dict[str, list[dict[str, Any]]] = {}
        for o in sorted(self.orders.values(), key=lambda o: o["id"]):
            by_status.setdefault(o["status"], []).append(o)
        for status, name in (("open", "open"), ("acknowledged", "acked"), ("in_progress", "started")):
            if by_status.get(status):
                v[f"{name}_order"] = str(by_status[status][0]["id"])
                v[f"{name}_machine"] = by_status[status][0]["machine_id"]
            if len(by_status.get(status, [])) > 1:
                v[f"{name}_order_2"] = str(by_status[status][1]["id"])
                v[f"{name}_machine_2"] = by_status[status][1]["machine_id"]
        closed = by_status.get("done", [])
        if closed:
            v["closed_order"] = str(closed[0]["id"])
            v["closed_machine"] = closed[0]["machine_id"]
        open_ranked = [m for m in ranked if m["open_work_order_id"] is not None]
        if open_ranked:
            v["order_machine"] = open_ranked[0]["machine_id"]
            v["machine_order"] = str(open_ranked[0]["open_work_order_id"])
        worst = self.machines.get(v.get("worst", ""))
        if worst is not None and worst["open_work_order_id"] is not None:
            v["worst_order"] = str(worst["open_work_order_id"])
        events = [e for e in self.extra["audit"] if e["action"].startswith("event")]
        for e in reversed(events):  # oldest first
            kind = (e.get("detail") or {}).get("kind")
            machine = (e.get("detail") or {}).get("machine_id")
            if kind in ("inspection", "failure") and machine and f"{kind}_machine" not in v:
                v[f"{kind}_machine"] = machine
        open_states = ("open", "acknowledged", "in_progress")
        due = sorted(
            (o for o in self.orders.values() if o["status"] in open_states),
            key=lambda o: (o.get("due_at") or "9999", o["id"]),
        )
        if due:
            v["first_due_order"] = str(due[0]["id"])
            v["first_due_machine"] = due[0]["machine_id"]
        v["unknown_machine"] = _unknown_id({m["machine_id"]: m for m in active} or self.machines)
        v["unknown_order"] = str(max(self.orders, default=0) + 500)
        types = sorted({m["machine_type"] for m in active})
        if types:
            v["machine_type"] = types[0]
            v["time_unit"] = str(active[0]["time_unit"])
        self.extra["at_risk_count"] = sum(m["status"] == "at_risk" for m in active)
        self.extra["open_orders"] = sum(
            o["status"] in ("open", "acknowledged", "in_progress") for o in self.orders.values()
        )
        self.extra["active"] = len(active)
        self.extra["machines"] = len(self.machines)
        return self

    def fill(self, text: str) -> str:
        """``text`` with its placeholders replaced; an unknown one raises ``ValidationError``."""

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.values:
                raise ValidationError(f"no value for {{{name}}} in this fleet", code="bad_case")
            return self.values[name]

        return _PLACEHOLDER.sub(one, text)

    def champion(self, machine_type: str) -> str | None:
        models = self.extra["models"]
        types = models.get("machine_types", models) if isinstance(models, dict) else {}
        entry = types.get(machine_type) if isinstance(types, dict) else None
        if isinstance(entry, dict):
            champ = entry.get("champion")
            if isinstance(champ, dict):
                return str(champ.get("version"))
            if champ is not None:
                return str(champ)
        return None


def _tail_number(machine_id: str) -> str:
    found = re.search(r"(\d+)\D*$", machine_id)
    return str(int(found.group(1))) if found else ""


def _unknown_id(machines: dict[str, Any]) -> str:
    sample = sorted(machines)[-1] if machines else "m-1"
    prefix = re.sub(r"\d+\D*$", "", sample)
    for n in range(977, 10_000):
        candidate = f"{prefix}{n}"
        if candidate not in machines:
            return candidate
    return "zz-99999"


# -- facts and citations ----------------------------------------------------------------------


def _number_forms(x: float) -> set[str]:
    """The forms the answers print a figure in (they round to whole units)."""
    return {f"{x:.0f}"}


def _has_number(answer: str, forms: set[str]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(f)}(?![\w]|\.\d)", answer) for f in forms)


def _has_id(answer: str, ident: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(ident)}(?![\w-])", answer) is not None


def _has_order(answer: str, order_id: int) -> bool:
    return re.search(rf"\bWO-{order_id}\b", answer) is not None


def check_fact(fact: Any, answer: str, snap: Snapshot, machine: str | None, order: str | None) -> str | None:
    """None when ``answer`` states ``fact``; else what was missing."""
    if isinstance(fact, dict):
        if "text" in fact:
            want = snap.fill(str(fact["text"]))
            return None if want.lower() in answer.lower() else f"“{want}”"
        if "any" in fact:
            options = [snap.fill(str(o)) for o in fact["any"]]
            return None if any(o.lower() in answer.lower() for o in options) else f"one of {options}"
        if "id" in fact:
            ident = snap.fill(str(fact["id"]))
            return None if _has_id(answer, ident) else ident
        if "order" in fact:
            n = int(snap.fill(str(fact["order"])))
            return None if _has_order(answer, n) else f"WO-{n}"
        raise ValidationError(f"unknown fact {fact!r}", code="bad_case")
    name = str(fact)
    m = snap.machines.get(machine or "")
    o = snap.orders.get(int(order)) if order and order.isdigit() else None
    if name in MACHINE_FACTS:
        if m is None:
            return f"{name} (no subject machine)"
        return MACHINE_FACTS[name](answer, m)
    if name in ORDER_FACTS:
        if o is None:
            return f"{name} (no subject work order)"
        return ORDER_FACTS[name](answer, o)
    if name in FLEET_FACTS:
        return FLEET_FACTS[name](answer, snap, m)
    raise ValidationError(f"unknown fact {name!r}", code="bad_case")


def _number(value: float | None, label: str) -> Callable[[str], str | None]:
    def check(answer: str) -> str | None:
        if value is None:
            return f"{label} (the API has none)"
        forms = _number_forms(float(value))
        return None if _has_number(answer, forms) else f"{label} {sorted(forms)[0]}"

    return check


def _interval(m: dict[str, Any], i: int) -> float | None:
    interval = m.get("rul_interval")
    return interval[i] if interval else None


MACHINE_FACTS: dict[str, Callable[[str, dict[str, Any]], str | None]] = {
    "machine_id": lambda a, m: None if _has_id(a, m["machine_id"]) else m["machine_id"],
    "predicted_rul": lambda a, m: _number(m["predicted_rul"], "predicted RUL")(a),
    "rul_lower": lambda a, m: _number(_interval(m, 0), "RUL lower bound")(a),
    "rul_upper": lambda a, m: _number(_interval(m, 1), "RUL upper bound")(a),
    "threshold": lambda a, m: _number(m["threshold"], "threshold")(a),
    "time_unit": lambda a, m: None if str(m["time_unit"]) in a else str(m["time_unit"]),
    "status": lambda a, m: (
        None
        if re.search(rf"\b{m['status'].replace('_', ' ')}\b", a, re.I)
        else f"status {m['status'].replace('_', ' ')}"
    ),
    "open_work_order": lambda a, m: (
        "open work order (the API has none)"
        if m["open_work_order_id"] is None
        else None
        if _has_order(a, m["open_work_order_id"])
        else f"WO-{m['open_work_order_id']}"
    ),
    "no_open_work_order": lambda a, m: (
        None
        if m["open_work_order_id"] is None and re.search(r"\bno open work order\b", a, re.I)
        else "“no open work order”"
    ),
    "model_version": lambda a, m: (
        None if m["model_version"] and _has_id(a, str(m["model_version"])) else f"model {m['model_version']}"
    ),
    "lifecycle": lambda a, m: None if m["lifecycle"] in a.lower() else m["lifecycle"],
}

ORDER_FACTS: dict[str, Callable[[str, dict[str, Any]], str | None]] = {
    "order_id": lambda a, o: None if _has_order(a, o["id"]) else f"WO-{o['id']}",
    "order_machine": lambda a, o: None if _has_id(a, o["machine_id"]) else o["machine_id"],
    "order_status": lambda a, o: (
        None if o["status"].replace("_", " ") in a.lower() else o["status"].replace("_", " ")
    ),
    "priority": lambda a, o: None if o["priority"] in a.lower() else o["priority"],
    "finding": lambda a, o: (
        None if (o.get("finding") or "?").replace("_", " ") in a.lower() else f"finding {o.get('finding')}"
    ),
    "technician": lambda a, o: None if o.get("technician") and o["technician"] in a else "the technician",
    "due": lambda a, o: None if o.get("due_at") and when(o["due_at"]) in a else f"due {o.get('due_at')}",
    "component": lambda a, o: (
        None if o.get("component") and o["component"].replace("_", " ") in a.replace("_", " ") else "component"
    ),
}

FLEET_FACTS: dict[str, Callable[[str, Snapshot, dict[str, Any] | None], str | None]] = {
    "at_risk_count": lambda a, s, m: _number(s.extra["at_risk_count"], "machines at risk")(a),
    "open_orders_count": lambda a, s, m: _number(s.extra["open_orders"], "open work orders")(a),
    "active_count": lambda a, s, m: _number(s.extra["active"], "active machines")(a),
    "machine_count": lambda a, s, m: _number(s.extra["machines"], "machines")(a),
    "champion": lambda a, s, m: (
        None
        if (v := s.champion(s.values.get("machine_type", ""))) and _has_id(a, v)
        else f"champion version {v}"
    ),
}


def check_cite(spec: str, sources: list[dict[str, Any]], snap: Snapshot, machine: str | None, order: str | None) -> str | None:
    kind, _, ident = snap.fill(spec).partition(":")
    if kind == "machine":
        ident = ident or (machine or "")
    elif kind == "work_order":
        ident = ident or (order or "")
    for s in sources:
        if s.get("kind") != kind:
            continue
        if not ident or str(s.get("id")) == ident:
            return None
    return f"{kind}:{ident}" if ident else kind


# -- invented facts ---------------------------------------------------------------------------


def invented(
    answer: str,
    sources: list[dict[str, Any]],
    snap: Snapshot,
    asked: str,
    tools: Toolbox | None,
) -> list[str]:
    """Facts in ``answer`` no tool result holds, and ids the live API does not know.

    ``asked`` is everything the user wrote in the conversation so far (a named id that does not
    exist may be repeated back: "there is no machine zzz-9")."""
    found: list[str] = []
    evidence = _evidence(answer, sources, tools, asked) if tools is not None else []
    stated = allowed(evidence)  # every value the tools returned, as text
    known_orders = set(snap.orders)
    for n in _WO.findall(answer):
        if int(n) not in known_orders and n not in asked:
            found.append(f"WO-{n} (no such work order)")
    asked_lower = asked.lower()
    for token in re.findall(r"(?<![\w-])[A-Za-z]+[-_]?\d+[A-Za-z0-9_-]*", answer):
        if token in snap.machines or token.lower() in asked_lower or token.lower() in stated:
            continue  # a machine, named by the user, or a code a manual or an order states
        if re.fullmatch(r"WO-\d+", token) or not _shaped_like(token, snap.machines):
            continue
        found.append(f"{token} (no such machine)")
    if tools is not None:
        found += [f"{f} (no tool result)" for f in unsupported(answer, evidence, asked)]
    return found


def _shaped_like(token: str, machines: dict[str, Any]) -> bool:
    """A token shaped like one of the fleet's ids: the same prefix before the number."""
    prefix = re.sub(r"\d+\D*$", "", token).lower()
    return any(re.sub(r"\d+\D*$", "", m).lower() == prefix for m in machines)


def _evidence(answer: str, sources: list[dict[str, Any]], tools: Toolbox, asked: str) -> list[ToolResult]:
    """The tool results an answer could rest on, called afresh on the same state: the fleet-wide
    tools, and each machine, work order and manual section it names or cites."""
    results = [tools.at_risk(), tools.fleet_summary(), tools.alerts(), tools.audit_log(limit=50)]
    for status in ("open", "closed", "all"):
        results.append(tools.work_orders(status=status, limit=50))
    for mtype in tools.machine_types():
        results += [tools.at_risk(mtype), tools.fleet_summary(mtype), tools.model_versions(mtype)]
        results.append(tools.work_orders(status="open", machine_type=mtype, limit=50))
    ids = tools.machine_ids()
    named = {ids[t.lower()] for t in re.findall(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*[A-Za-z0-9]", answer) if t.lower() in ids}
    named |= {str(s["id"]) for s in sources if s.get("kind") in ("machine", "events", "predictions")}
    for machine_id in sorted(named):
        results += [
            tools.machine(machine_id),
            tools.maintenance_history(machine_id),
            tools.prediction_history(machine_id),
            tools.work_orders(status="all", machine_id=machine_id, limit=50),
            tools.audit_log(machine_id=machine_id, limit=50),
        ]
    for n in {int(x) for x in _WO.findall(answer)} | {
        int(s["id"]) for s in sources if s.get("kind") == "work_order" and str(s.get("id")).isdigit()
    }:
        results += [tools.work_order(n), tools.audit_log(work_order=n, limit=50)]
    for s in sources:
        if s.get("kind") == "manual":
            results.append(tools.manual_section(str(s["id"])))
    return results


# -- running the set --------------------------------------------------------------------------


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
    outcomes = []
    for i, turn in enumerate(case.turns):
        question = snap.fill(turn.ask)
        asked += "\n" + question
        body: dict[str, Any] = {"message": question}
        if conversation:
            body["conversation_id"] = conversation
        started = time.perf_counter()
        code, reply = call("POST", "/api/v1/assistant/chat", case.role, body)
        ms = (time.perf_counter() - started) * 1000
        if code != 200:
            outcomes.append(
                Outcome(case.id, case.category, case.fleet, i + 1, question, f"HTTP {code}: {reply}", False,
                        [f"HTTP {code}"], [], ms)
            )
            break
        conversation = reply["conversation_id"]
        answer, sources = reply["answer"], reply["sources"]
        machine = snap.fill(turn.machine) if turn.machine else None
        order = snap.fill(turn.order) if turn.order else None
        missing = [
            m for f in turn.facts if (m := check_fact(f, answer, snap, machine, order)) is not None
        ]
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
        bad = invented(answer, sources, snap, asked, tools)
        outcomes.append(
            Outcome(case.id, case.category, case.fleet, i + 1, question, answer, not missing, missing, bad, ms, sources)
        )
    return outcomes


def _check_after(after: dict[str, Any], call: Call, snap: Snapshot) -> list[str]:
    """The API's view after an action (or a refused one): the order's status and finding."""
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

    def text(self) -> str:
        s = self.summary()
        lines = [
            f"{s['correct']}/{s['questions']} correct ({s['score']:.1%}), {s['invented']} with invented facts, "
            f"latency p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms"
        ]
        for name, g in s["by_category"].items():
            lines.append(f"  {name:<10} {g['correct']:>3}/{g['questions']:<3} {g['score']:.0%}  invented {g['invented']}")
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
            f"{s['correct']}/{s['questions']} correct ({s['score']:.1%}), {s['invented']} with invented facts, "
            f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms.",
            "",
            "| category | correct | invented |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {g['correct']}/{g['questions']} | {g['invented']} |" for name, g in s["by_category"].items()
        ]
        for o in self.failures():
            lines += ["", f"## {o.case} turn {o.turn} ({o.category}, {o.fleet})", "", f"Question: {o.question}", ""]
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


__all__ = ["Case", "Expect", "Outcome", "Report", "Snapshot", "load_cases", "run_case", "run_set"]
