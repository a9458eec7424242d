"""The evaluation set: cases (conversations) and what each turn's answer must hold, from YAML."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitstop.errors import ValidationError

REFUSALS = {
    "unknown_machine": re.compile(
        r"\bno machine\b|\bnot in the fleet\b|\bunknown machine\b|\bdoes not exist\b|\bno such machine\b",
        re.I,
    ),
    "role": re.compile(
        r"\byour role\b.*\bcannot\b|\bnot allowed\b|\bno permission\b|\bnot permitted\b", re.I
    ),
    "unknown_order": re.compile(r"\bno work order\b|\bdoes not exist\b|\bnot found\b", re.I),
    "cannot_move": re.compile(r"\bcannot change\b|\bcan only\b|\balready\b", re.I),
    "nothing_pending": re.compile(r"\bnothing (?:is )?waiting\b|\bnothing to confirm\b", re.I),
    "which": re.compile(r"\bwhich\b.*\?", re.I | re.S),
}


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
