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


def unsupported(answer: str, results: Iterable[ToolResult], question: str = "") -> list[str]:
    """The facts in ``answer`` that no tool result (nor the question) contains."""
    ok = allowed(results, question)
    missing = []
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
