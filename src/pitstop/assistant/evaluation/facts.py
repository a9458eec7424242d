"""Scoring one answer: its facts and citations against the API, and the facts it invented."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pitstop.assistant.evaluation.snapshot import Snapshot
from pitstop.assistant.grounding import allowed, unsupported, when
from pitstop.assistant.tools import Toolbox, ToolResult
from pitstop.errors import ValidationError

_WO = re.compile(r"\bWO-(\d+)\b")


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
    "work_order_state": lambda a, m: (  # its open order, or that it has none
        MACHINE_FACTS["open_work_order"](a, m)
        if m["open_work_order_id"] is not None
        else MACHINE_FACTS["no_open_work_order"](a, m)
    ),
    "model_version": lambda a, m: (
        None if m["model_version"] and _has_id(a, str(m["model_version"])) else f"model {m['model_version']}"
    ),
    "last_reading": lambda a, m: (
        None
        if m["last_reading_ts"] and when(m["last_reading_ts"]) in a
        else f"last reading {m['last_reading_ts']}"
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
        None
        if o.get("component") and o["component"].replace("_", " ") in a.replace("_", " ")
        else "component"
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


def check_cite(
    spec: str, sources: list[dict[str, Any]], snap: Snapshot, machine: str | None, order: str | None
) -> str | None:
    kind, _, ident = snap.fill(spec).partition(":")
    if kind == "order_or_machine":  # the machine's open work order, or the machine when it has none
        order_id = snap.machines.get(machine or "", {}).get("open_work_order_id")
        kind, ident = ("work_order", str(order_id)) if order_id is not None else ("machine", machine or "")
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


def foreign_manuals(sources: list[dict[str, Any]], snap: Snapshot) -> list[str]:
    """Manual sections cited for machine types the fleet does not have: they answer another
    question (a harvester's injector symptoms for a turbofan's sensors)."""
    types = {m["machine_type"] for m in snap.machines.values()}
    return [
        f"cites {c['id']}, a {c['machine_type']} manual"
        for c in sources
        if c.get("kind") == "manual" and c.get("machine_type") and c["machine_type"] not in types
    ]


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
    ids, _ = tools.machine_ids()
    named = {
        ids[t.lower()]
        for t in re.findall(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*[A-Za-z0-9]", answer)
        if t.lower() in ids
    }
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
