"""Templates: tool results into sentences. Every figure, id and date printed here is read from the
``ToolResult`` passed in; nothing is computed that the tools did not return."""

from __future__ import annotations

import re
from typing import Any

from pitstop.assistant.grounding import when
from pitstop.assistant.text import tokens
from pitstop.assistant.tools import ToolResult

CAPABILITIES = (
    "I can tell you a machine's status and predicted remaining useful life (by its id), which machines "
    "are at risk, open work orders, a machine's maintenance and prediction history, firing drift and "
    "data-quality alerts, the model versions serving each machine type, who did what (engineers), and "
    "procedures from the manuals. I can also acknowledge, start or close a work order, or record an "
    "inspection, after you confirm."
)


def n(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.0f}"


def machine(r: ToolResult) -> str:
    d = r.data
    if not d["found"]:
        return f"There is no machine {d['machine_id']} in the fleet."
    mid, unit = d["machine_id"], d["time_unit"]
    kind = f"{mid} ({d['machine_type']}"
    if d["lifecycle"] != "active":
        kind += f", {d['lifecycle']}"
    kind += ")"
    if d["predicted_rul"] is None:
        text = f"{kind} has no scored readings yet."
    else:
        verdict = {
            "at_risk": "is at risk: the lower bound is under",
            "ok": "is ok: the lower bound is above",
            "retired": "is retired; its last lower bound compared with",
        }[d["status"]]
        text = (
            f"{kind} has a predicted remaining useful life of {n(d['predicted_rul'])} {unit} "
            f"({d['interval_coverage_percent']}% interval {n(d['rul_lower'])}–{n(d['rul_upper'])} {unit}); "
            f"it {verdict} the work-order threshold of {n(d['threshold'])} {unit}. "
            f"Model version {d['model_version']}, {d['readings']} readings, the last at "
            f"{when(d['last_reading_ts'])}."
        )
    order = d["open_work_order"]
    if order is not None:
        text += " " + order_line(order, unit)
    elif d["predicted_rul"] is not None:
        text += f" {mid} has no open work order."
    return text


def order_line(o: dict[str, Any], unit: str) -> str:
    due = f", due {when(o['due_at'])}" if o.get("due_at") else ""
    comp = f"; suspected component: {o['component']}" if o.get("component") else ""
    return (
        f"Work order WO-{o['id']} on {o['machine_id']} is {o['status'].replace('_', ' ')} "
        f"with {o['priority']} priority{due} "
        f"(opened at a predicted RUL of {n(o['predicted_rul'])} {unit}){comp}."
    )


def order_detail(r: ToolResult) -> str:
    d = r.data
    if not d["found"]:
        return f"There is no work order WO-{d['id']}."
    text = order_line(d, d["time_unit"])
    if d.get("procedure"):
        text += f" Procedure: {d['procedure']}."
    if d.get("closed_at"):
        finding = (d.get("finding") or "no finding").replace("_", " ")
        who = f" by {d['technician']}" if d.get("technician") else ""
        text += f" Closed at {when(d['closed_at'])}{who}, finding: {finding}."
    elif d.get("technician"):
        text += f" Technician: {d['technician']}."
    return text


def at_risk(r: ToolResult, scope: str) -> str:
    d = r.data
    if d["scored"] == 0:
        return f"No {scope} has been scored yet."
    if d["at_risk"]:
        listed = "; ".join(_risk_item(m) for m in d["at_risk"])
        more = f" (showing {len(d['at_risk'])})" if d["at_risk_count"] > len(d["at_risk"]) else ""
        return f"{d['at_risk_count']} {scope} at risk{more}, most urgent first: {listed}."
    listed = "; ".join(_risk_item(m) for m in d["lowest"])
    return f"No {scope} is at risk. The lowest predicted RULs: {listed}."


def _risk_item(m: dict[str, Any]) -> str:
    unit = m["time_unit"]
    return (
        f"{m['machine_id']}: RUL {n(m['predicted_rul'])} {unit}, lower bound {n(m['rul_lower'])} "
        f"(threshold {n(m['threshold'])})"
    )


def orders(r: ToolResult, what: str) -> str:
    d = r.data
    if not d["work_orders"]:
        return f"There are no {what}."
    items = "; ".join(
        f"WO-{o['id']} on {o['machine_id']} ({o['status'].replace('_', ' ')}, {o['priority']}"
        + (f", due {when(o['due_at'])}" if o.get("due_at") and o["status"] != "done" else "")
        + (f", {o['component']}" if o.get("component") else "")
        + ")"
        for o in d["work_orders"]
    )
    shown = f", showing {len(d['work_orders'])}" if d["count"] > len(d["work_orders"]) else ""
    if d["count"] == 1:
        what = what.replace("work orders", "work order")
    return f"{d['count']} {what}{shown}: {items}."


def history(r: ToolResult) -> str:
    d = r.data
    if not d["events"]:
        return f"{d['machine_id']} has no recorded failures, maintenance or inspections."
    items = "; ".join(
        f"{when(e['ts'])} {e['kind']}"
        + (f" ({e['component']})" if e.get("component") else "")
        + (f": {e['detail']}" if e.get("detail") else "")
        for e in d["events"]
    )
    events = "recorded event" if d["count"] == 1 else "recorded events"
    return f"{d['machine_id']} has {d['count']} {events}; the latest: {items}."


def trend(r: ToolResult, unit: str) -> str:
    d = r.data
    points = d["predictions"]
    if not points:
        return f"{d['machine_id']} has no predictions yet."
    first, last = points[0], points[-1]
    text = (
        f"{d['machine_id']}'s last {len(points)} predictions went from {n(first['rul'])} {unit} "
        f"({when(first['ts'])}) to {n(last['rul'])} {unit} ({when(last['ts'])}), "
        f"lower bound {n(last['rul_lower'])}."
    )
    return text


def alerts(r: ToolResult, what: str) -> str:
    d = r.data
    if not d["alerts"]:
        return f"No {what} alert is firing."
    items = "; ".join(
        f"{a['kind'].replace('_', ' ')} ({a['severity']}) since {when(a['since'])}: {a['summary']}"
        for a in d["alerts"][:5]
    )
    return f"{d['firing']} alert(s) firing: {items}."


def models(r: ToolResult) -> str:
    d = r.data
    if not d["registry_available"]:
        return (
            f"The model registry cannot be read right now, so I cannot say which {d['machine_type']} "
            "model serves."
        )
    if d["champion"] is None:
        return f"No {d['machine_type']} model is champion yet."
    text = f"The {d['machine_type']} champion is model version {d['champion']['version']}"
    if d["champion"]["created_at"]:
        text += f" (registered {when(d['champion']['created_at'])})"
    if d["challenger"]:
        text += f"; version {d['challenger']['version']} is the challenger"
    if d["previous"]:
        text += f"; version {d['previous']['version']} was the champion before"
    return text + "."


def summary(r: ToolResult) -> str:
    parts = []
    for mtype, t in r.data["machine_types"].items():
        parts.append(
            f"{t['machines']} {mtype} machines ({t['active']} active): {t['at_risk']} at risk, {t['ok']} ok, "
            f"{t['no_data']} without scored readings, {t['retired']} retired; "
            f"{t['open_work_orders']} open work orders; a work order opens when the lower bound falls under "
            f"{n(t['threshold'])} {t['time_unit']} (lead time {n(t['lead_time'])} {t['time_unit']})"
        )
    if not parts:
        return "The fleet has no machines yet."
    return "The fleet: " + "; ".join(parts) + "."


def audit(r: ToolResult) -> str:
    entries = r.data["entries"]
    if not entries:
        return "The audit log has nothing on that."
    items = "; ".join(
        f"{when(e['ts'])} {e['actor']}" + (f" ({e['role']})" if e.get("role") else "") + f" {e['action']}"
        for e in entries[:5]
    )
    return f"From the audit log, newest first: {items}."


def manual(r: ToolResult, limit: int = 700, asked: set[str] | None = None) -> list[str]:
    return [
        f"From the manual {s['document']}, “{s['section']}”: {_excerpt(s['text'], limit, asked or set())}"
        for s in r.data["sections"]
    ]


def _excerpt(text: str, limit: int, asked: set[str]) -> str:
    """The section, or when it is long its first sentence and the sentences sharing most words
    with the question, in their order, within ``limit`` characters."""
    if len(text) <= limit:
        return text
    sentences = [x for x in re.split(r"(?<=[.!?])\s+|(?<=\|)\s+(?=\|)", text) if x.strip()]
    ranked = sorted(range(1, len(sentences)), key=lambda i: (-len(asked & set(tokens(sentences[i]))), i))
    keep, size = {0}, len(sentences[0])
    for i in ranked:
        wanted = {i}
        if sentences[i].startswith("|"):  # a table row: with the table's header row
            head = i
            while head > 0 and sentences[head - 1].startswith("|"):
                head -= 1
            wanted.add(head)
        extra = sum(len(sentences[j]) + 3 for j in wanted - keep)
        if size + extra > limit:
            continue
        keep |= wanted
        size += extra
    parts, last = [], -1
    for i in sorted(keep):
        parts.append(("… " if i != last + 1 else "") + sentences[i])
        last = i
    tail = " …" if last != len(sentences) - 1 else ""
    return " ".join(parts) + tail


def best(r: ToolResult, scope: str) -> str:
    d = r.data
    if not d["highest"]:
        return f"No {scope} has been scored yet."
    listed = "; ".join(_risk_item(m) for m in d["highest"])
    return f"The {scope} furthest from their work-order threshold, best first: {listed}."
