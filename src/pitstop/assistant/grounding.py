"""Is every fact in an answer backed by a tool result? Numbers, machine and work-order ids and
dates are pulled out of the text and looked up among what the tools returned (and what the user
wrote). The template path is checked the same way as an LLM's answer."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pitstop.assistant.tools import ToolResult

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}| UTC)?)?")
_ORDER = re.compile(r"\bWO-(\d+)\b")
_ID = re.compile(r"\b[A-Za-z]+[-_][A-Za-z0-9_-]*\d[A-Za-z0-9_-]*\b")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")


def when(value: str | datetime | None) -> str:
    """A timestamp as answers show it: ``2026-12-03 10:00 UTC``."""
    if value is None:
        return "unknown"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def number_forms(x: float) -> set[str]:
    forms = {f"{x:.0f}", f"{x:.1f}", f"{x:.2f}", f"{x:g}"}
    if float(x).is_integer():
        forms.add(str(int(x)))
    return {f.removesuffix(".0") if f.endswith(".0") else f for f in forms} | forms


def allowed(results: Iterable[ToolResult], question: str = "") -> set[str]:
    """Every string form of every value the tools returned, and the words of the question."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, (int, float)):
            found.update(number_forms(float(value)))
        else:
            text = str(value)
            found.add(text.lower())
            if _ISO.fullmatch(text):
                try:
                    found.add(when(text).lower())
                    found.add(text[:10])
                except ValueError:
                    pass
            for token in _facts_in(text):
                found.add(token.lower())

    for result in results:
        walk(result.data)
        walk(result.args)
    for token in _facts_in(question):
        found.add(token.lower())
    return found


def _facts_in(text: str) -> list[str]:
    facts: list[str] = []
    rest = text
    for match in _ISO.finditer(text):
        facts.append(match.group(0))
    rest = _ISO.sub(" ", rest)
    facts += [f"WO-{n}" for n in _ORDER.findall(rest)]
    facts += [f"{n}" for n in _ORDER.findall(rest)]
    rest = _ORDER.sub(" ", rest)
    ids = _ID.findall(rest)
    facts += ids
    rest = _ID.sub(" ", rest)
    facts += _NUMBER.findall(rest)
    return facts


_AT_RISK = re.compile(r"(?<!not )\bat[- ]risk\b", re.I)
_FINE = re.compile(r"\b(?:is|looks|seems|are)\s+(?:ok|fine|healthy|safe)\b", re.I)
_ORDER_STATE = re.compile(
    r"\bWO-(\d+)\b[^.;]*?\bis (?:now |still )?(open|acknowledged|in progress|done|closed|cancelled)\b", re.I
)


def status_conflicts(answer: str, results: Iterable[ToolResult]) -> list[str]:
    """Statuses an answer gives that its tools contradict: a machine called at risk (or fine)
    that the tools judged otherwise, a work order given another state than it has."""
    machines: dict[str, str] = {}
    orders: dict[str, str] = {}
    for r in results:
        data = r.data if isinstance(r.data, dict) else {}
        if r.tool == "machine" and data.get("found"):
            machines[str(data["machine_id"])] = str(data["status"])
        elif r.tool == "at_risk":
            for m in data.get("lowest", []) + data.get("at_risk", []):
                machines[str(m["machine_id"])] = "at_risk" if m["at_risk"] else "ok"
        elif r.tool == "work_order" and data.get("found"):
            orders[str(data["id"])] = str(data["status"])
        elif r.tool == "work_orders":
            orders.update({str(o["id"]): str(o["status"]) for o in data.get("work_orders", [])})
    conflicts = []
    for sentence in re.split(r"(?<=[.!?;])\s+", answer):
        named = [m for m in machines if re.search(rf"(?<![\w-]){re.escape(m)}(?![\w-])", sentence)]
        if len(named) == 1:
            status = machines[named[0]]
            if _AT_RISK.search(sentence) and status != "at_risk":
                conflicts.append(f"{named[0]} at risk")
            elif _FINE.search(sentence) and status == "at_risk":
                conflicts.append(f"{named[0]} ok")
        for number, said in _ORDER_STATE.findall(sentence):
            actual = orders.get(number)
            said = said.lower().replace(" ", "_")
            closed = said == "closed" and actual in ("done", "cancelled")
            if actual is not None and said != actual and not closed:
                conflicts.append(f"WO-{number} {said}")
    return conflicts


def unsupported(answer: str, results: Iterable[ToolResult], question: str = "") -> list[str]:
    """The facts in ``answer`` that no tool result (nor the question) contains, and the
    statuses the tools contradict."""
    results = list(results)
    ok = allowed(results, question)
    missing = status_conflicts(answer, results)
    for fact in _facts_in(answer):
        key = fact.lower()
        if key in ok:
            continue
        if key.startswith("wo-") and key[3:] in ok:
            continue
        missing.append(fact)
    return missing


def strip_unsupported(answer: str, results: list[ToolResult], question: str = "") -> tuple[str, list[str]]:
    """The answer without its sentences that state an unsupported fact, and those facts."""
    missing = unsupported(answer, results, question)
    if not missing:
        return answer, []
    kept = [
        sentence
        for sentence in re.split(r"(?<=[.!?])\s+", answer)
        if not unsupported(sentence, results, question)
    ]
    return " ".join(kept).strip(), missing
