"""Questions: resolve what the message is about (with the conversation's context), call the
tools each intent needs, and phrase their results with the templates."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pitstop.assistant import answers
from pitstop.assistant.text import tokens
from pitstop.assistant.tools import Toolbox, ToolResult
from pitstop.assistant.understand import unknown_type

if TYPE_CHECKING:
    from pitstop.assistant.assistant import Turn

MAX_MACHINES = 5
MANUAL_MIN_SCORE = 2.0  # a section must share more than a common word with the question
FALLBACK_MIN_SCORE = 3.0  # … and more still when the question did not ask for a procedure
COVERAGE = 0.5  # … or hold this share of the question's words (at least two)
SECOND_SECTION = 0.6  # a second section only when it scores this close to the first
_ABOUT_MACHINE = {"status", "history", "trend", "orders", "procedure"}
_ORDER_FOLLOW_UP = re.compile(
    r"\bwhat did (?:they|you|he|she|the technician|the tech) (?:find|found|say|write)\b|\bthe finding\b|"
    r"\bverdict\b|\boutcome\b|"
    r"\bwho (?:is|was) (?:on|assigned|working)\b|\bwhen is (?:it|that) due\b",
    re.I,
)
_PRIORITY = re.compile(r"\b(urgent|high|normal)\b", re.I)
_CLOSED = re.compile(r"\b(closed|done|finished|completed|cancelled|canceled|past)\b", re.I)
_ALERT_KIND = (
    ("drift", re.compile(r"\bdrift", re.I)),
    ("data_quality", re.compile(r"\bdata quality\b|\bsensor faults?\b|\bfaulty sensors?\b|\bstuck\b", re.I)),
)


def resolve(turn: Turn) -> tuple[list[str], list[int], str | None]:
    """The machines and work orders a question is about, and a problem to state instead."""
    p, ctx = turn.parsed, turn.context
    machines, orders = list(p.machines), list(p.orders)
    listed = ctx.get("listed") or {}
    if p.ordinal is not None and not machines and not orders and listed:
        ids = listed.get("ids", [])
        index = len(ids) - 1 if p.ordinal == -1 else p.ordinal - 1
        if not 0 <= index < len(ids):
            return [], [], f"The last list I gave had {len(ids)} items."
        if listed.get("kind") == "machine":
            machines = [ids[index]]
        else:
            orders = [int(ids[index])]
    if not machines and not orders and not p.ambiguous:
        about_focus = p.pronoun or (
            bool(p.intents & _ABOUT_MACHINE)
            and not p.intents & {"at_risk", "summary"}
            and p.machine_type is None
            and not p.unknown_machines
            and "orders" not in p.intents - {"status"}
        )
        if (p.order_pronoun or _ORDER_FOLLOW_UP.search(p.text)) and ctx.get("order"):
            orders = [int(ctx["order"])]
        elif about_focus and ctx.get("machine") and (p.pronoun or not p.intents & {"procedure"}):
            machines = [str(ctx["machine"])]
    return machines[:MAX_MACHINES], orders[:MAX_MACHINES], None


def answer_question(
    turn: Turn, tools: Toolbox, can: Callable[[str, str], bool], context_only: bool = False
) -> None:
    p, ctx = turn.parsed, turn.context
    if "help" in p.intents and not p.machines:
        if not context_only:
            turn.add(answers.CAPABILITIES)
        return
    machines, orders, problem = resolve(turn)
    kind = unknown_type(p.text, tools.vocabulary())
    if kind is not None and not machines and not orders and not context_only:
        types = tools.fleet_types()
        names = ", ".join(types.data["machine_types"])
        turn.add(f"This fleet has no {kind} machines: its machine types are {names}.", types)
        return
    if context_only:
        if machines:
            ctx["machine"] = machines[-1]
        if orders:
            ctx["order"] = orders[-1]
        return
    if problem:  # the conversation's own last list is the evidence
        ids = (ctx.get("listed") or {}).get("ids", [])
        turn.add(problem, ToolResult("conversation", {}, {"listed": ids, "count": len(ids)}))
    for unknown in p.unknown_machines:
        turn.add(f"There is no machine {unknown} in the fleet.")
    for phrase, candidates in p.ambiguous.items():
        turn.add(
            f"“{phrase}” could be {', '.join(candidates)}: which one?", tools.candidates(phrase, candidates)
        )
    if "audit" in p.intents and not can(turn.role, "audit.read"):
        turn.add(f"Your role ({turn.role}) cannot read the audit log; an engineer or an admin can.")
        p.intents.discard("audit")
    if p.codes:
        _codes(turn, tools)
    for machine_id in machines:
        _about_machine(turn, tools, machine_id)
    for order_id in orders:
        _about_order(turn, tools, order_id)
    if not machines and not orders and not p.unknown_machines and not p.ambiguous and not p.codes:
        _about_fleet(turn, tools)
    if not turn.parts:
        _from_manuals(turn, tools, manual_type(turn, tools), fallback=True)
    if not turn.parts:
        turn.add(f"I don't know that from the fleet's data or its manuals. {answers.CAPABILITIES}")
    elif p.unknown_machines and len(turn.parts) == len(p.unknown_machines):
        turn.add("Ask me about a machine by its id, the machines at risk, work orders or a procedure.")


def _about_machine(turn: Turn, tools: Toolbox, machine_id: str) -> None:
    p, ctx = turn.parsed, turn.context
    status = tools.machine(machine_id)
    d = status.data
    ctx["machine"] = machine_id
    wants = p.intents & {"history", "trend", "orders", "procedure", "audit", "models"}
    if not wants or p.intents & {"status"} or not d["found"]:
        turn.add(answers.machine(status), status)
    else:
        turn.results.append(status)  # what the other answers say about it rests on this too
    if not d["found"]:
        return
    unit = d["time_unit"]
    if "history" in p.intents:
        result = tools.maintenance_history(machine_id)
        turn.add(answers.history(result), result)
    if "trend" in p.intents:
        result = tools.prediction_history(machine_id)
        turn.add(answers.trend(result, unit), result)
    if "orders" in p.intents:
        status_filter = "closed" if _CLOSED.search(p.text) else "all" if "history" in p.intents else "open"
        result = tools.work_orders(status=status_filter, machine_id=machine_id, limit=5)
        if not result.data["work_orders"] and status_filter == "open":
            turn.add(f"{machine_id} has no open work order.", status)
        else:
            what = {"open": "open work orders", "closed": "closed work orders", "all": "work orders"}
            turn.add(answers.orders(result, f"{what[status_filter]} on {machine_id}"), result)
            _listed(ctx, "work_order", [o["id"] for o in result.data["work_orders"]])
        if d["open_work_order"] is not None:
            ctx["order"] = d["open_work_order"]["id"]
    if "models" in p.intents:
        result = tools.model_versions(d["machine_type"])
        served = f"{machine_id}'s prediction came from model version {d['model_version']}. "
        turn.add(served + answers.models(result), result)
    if "audit" in p.intents:
        order = d["open_work_order"]
        if "orders" in p.intents and order is not None:  # "who acknowledged its work order?"
            result = tools.audit_log(work_order=int(order["id"]))
        else:
            result = tools.audit_log(machine_id=machine_id)
        turn.add(answers.audit(result), result)
    if "procedure" in p.intents:
        order = d["open_work_order"]
        if order is not None and order.get("procedure") and "orders" not in p.intents:
            detail = tools.work_order(order["id"])
            turn.add(answers.order_detail(detail), detail)
        _procedure(turn, tools, d["machine_type"], order)


def _about_order(turn: Turn, tools: Toolbox, order_id: int) -> None:
    p, ctx = turn.parsed, turn.context
    result = tools.work_order(order_id)
    turn.add(answers.order_detail(result), result)
    if not result.data["found"]:
        return
    ctx["order"], ctx["machine"] = order_id, result.data["machine_id"]
    if "audit" in p.intents:
        log = tools.audit_log(work_order=order_id)
        turn.add(answers.audit(log), log)
    if "status" in p.intents and "machine" in p.text.lower():
        status = tools.machine(result.data["machine_id"])
        turn.add(answers.machine(status), status)
    if "procedure" in p.intents:
        _procedure(turn, tools, result.data["machine_type"], result.data)


def _about_fleet(turn: Turn, tools: Toolbox) -> None:
    p, ctx = turn.parsed, turn.context
    mtype = p.machine_type
    scope = f"{mtype} machines" if mtype else "machines"
    if mtype:
        ctx["machine_type"] = mtype
    if "summary" in p.intents or ("status" in p.intents and mtype and not p.intents & {"at_risk"}):
        result = tools.fleet_summary(mtype)
        turn.add(answers.summary(result), result)
    if "at_risk" in p.intents:
        result = tools.at_risk(mtype)
        turn.add(answers.at_risk(result, scope), result)
        shown = result.data["at_risk"] or result.data["lowest"]
        _listed(ctx, "machine", [m["machine_id"] for m in shown])
        if shown:  # "which one first?" then "how long has it got?": the first is in focus
            ctx["machine"] = shown[0]["machine_id"]
        if "procedure" in p.intents and shown:  # "which is worst and what should I check on it?"
            worst = tools.machine(shown[0]["machine_id"])
            ctx["machine"] = worst.data["machine_id"]
            turn.add(answers.machine(worst), worst)
            _procedure(turn, tools, worst.data["machine_type"], worst.data["open_work_order"])
            return
    if "best" in p.intents and "at_risk" not in p.intents:
        result = tools.at_risk(mtype)
        shown = [m["machine_id"] for m in result.data["highest"]]
        result.sources = result.sources[:1] + [
            {"kind": "machine", "id": m, "url": f"/machines/{m}", "title": m} for m in shown
        ]
        turn.add(answers.best(result, scope), result)
        _listed(ctx, "machine", [m["machine_id"] for m in result.data["highest"]])
    if "orders" in p.intents and "at_risk" not in p.intents:
        status = "closed" if _CLOSED.search(p.text) else "open"
        priority = _PRIORITY.search(p.text)
        level = priority.group(1).lower() if priority else None
        result = tools.work_orders(status=status, machine_type=mtype, priority=level)
        what = f"{status} {level + ' ' if level else ''}work orders" + (
            f" on {mtype} machines" if mtype else ""
        )
        turn.add(answers.orders(result, what), result)
        _listed(ctx, "work_order", [o["id"] for o in result.data["work_orders"]])
    if "alerts" in p.intents:
        kind = next((k for k, pattern in _ALERT_KIND if pattern.search(p.text)), None)
        result = tools.alerts(kind, mtype)
        turn.add(answers.alerts(result, (kind or "").replace("_", " ") or "monitoring"), result)
    if "models" in p.intents:
        for name in [mtype] if mtype else tools.machine_types():
            result = tools.model_versions(name)
            turn.add(answers.models(result), result)
    if "audit" in p.intents:
        result = tools.audit_log(actor=p.actor)
        turn.add(answers.audit(result), result)
    if "procedure" in p.intents:
        _from_manuals(turn, tools, mtype or manual_type(turn, tools))


def manual_type(turn: Turn, tools: Toolbox) -> str | None:
    """The machine type a question about the manuals is about: named, the conversation's, the one
    whose sensors it names, or the fleet's only type."""
    p, ctx = turn.parsed, turn.context
    if p.machine_type:
        return p.machine_type
    by_sensor = tools.sensor_types
    named = {by_sensor[w] for w in re.findall(r"[a-z0-9_]+", p.text.lower()) if w in by_sensor}
    if len(named) == 1:
        return named.pop()
    if ctx.get("machine_type"):
        return str(ctx["machine_type"])
    if ctx.get("machine"):
        known = tools.machine(str(ctx["machine"])).data
        if known.get("found"):
            return str(known["machine_type"])
    types = tools.machine_types()
    return types[0] if len(types) == 1 else None


def _procedure(turn: Turn, tools: Toolbox, machine_type: str, order: dict[str, Any] | None) -> None:
    """How to do the work: the sections the order's procedure names by code, else a search of the
    type's manuals (with the suspected component)."""
    if order is not None and order.get("procedure"):
        cited = tools.procedure_sections(order["procedure"], machine_type)
        if cited.data["sections"]:
            turn.add(answers.manual(cited), cited)
            return
    component = (order or {}).get("component") or ""
    _from_manuals(turn, tools, machine_type, extra=component)


def _codes(turn: Turn, tools: Toolbox) -> None:
    """The manual sections of the procedures the question names by code ("what is P-101?")."""
    mtype = manual_type(turn, tools)
    for code in turn.parsed.codes:
        cited = tools.procedure_sections(code, mtype, limit=1)
        if cited.data["sections"]:
            turn.add(answers.manual(cited), cited)
        else:
            turn.add(f"No manual section names procedure {code}.")


def _from_manuals(
    turn: Turn, tools: Toolbox, machine_type: str | None, extra: str = "", fallback: bool = False
) -> None:
    named = [w for w in re.findall(r"[a-z0-9_]+", turn.parsed.text.lower()) if w in tools.sensor_types]
    if named and not extra:  # "what is s4?": the sensor reference names it
        extra = "sensor reference"
        fallback = False
    query = f"{turn.parsed.text} {extra}".strip()
    result = tools.search_manuals(query, machine_type, limit=1 if fallback or extra else 2)
    floor = FALLBACK_MIN_SCORE if fallback else MANUAL_MIN_SCORE
    asked = set(tokens(query))
    sections = [s for s in result.data["sections"] if s["score"] >= floor or _covers(asked, s)]
    sections = [s for s in sections if s["score"] >= SECOND_SECTION * sections[0]["score"]]
    if not sections:
        if not fallback:
            where = f" for {machine_type}" if machine_type else ""
            turn.add(f"I found no manual section{where} on that.")
        return
    result.data["sections"] = sections
    result.sources = result.sources[: len(sections)]
    turn.add(answers.manual(result, asked=asked), result)


def _covers(asked: set[str], section: dict[str, Any]) -> bool:
    """Whether a section holds most of the question's words (BM25's scores are small in a
    manual of few sections, where every word is rare)."""
    have = set(tokens(f"{section['section']} {section['text']}"))
    shared = asked & have
    return len(shared) >= 2 and len(shared) >= COVERAGE * len(asked)


def _listed(ctx: dict[str, Any], kind: str, ids: list[Any]) -> None:
    if ids:
        ctx["listed"] = {"kind": kind, "ids": ids}
