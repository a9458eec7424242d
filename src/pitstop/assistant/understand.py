"""From a message to what it asks: intents and slots, deterministic (no model, no randomness).

Slots are resolved against the live fleet: a machine is named by its id as stored (any naming
scheme), or by a noun and a number ("engine 31", "harvester 17") matched against the ids' trailing
numbers; "it", "that machine" and "the second one" are left for the conversation to resolve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pitstop.assistant.vocabulary import (
    ACTIONS,
    DEFINITION,
    FINDINGS,
    INTENTS,
    JOINED_ID,
    KINDS,
    LISTING,
    MACHINE_NOUNS,
    NEGATED,
    NO,
    NOTE,
    NUMBERED,
    ORDER_ID,
    ORDER_PRONOUN,
    ORDINAL,
    ORDINALS,
    PRONOUN,
    REQUEST,
    SEPARATED_ID,
    TARGET,
    TOKEN,
    WEAK_RISK,
    YES,
)


@dataclass
class Parsed:
    """What a message asks, before the conversation fills in references."""

    text: str
    intents: set[str] = field(default_factory=set)
    machines: list[str] = field(default_factory=list)  # as stored in the fleet
    unknown_machines: list[str] = field(default_factory=list)  # shaped like ids, not in the fleet
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # "engine 7" -> candidates
    machine_type: str | None = None
    orders: list[int] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # procedure codes named: "P-101"
    ordinal: int | None = None  # 1-based; -1 for "the last one"
    pronoun: bool = False
    order_pronoun: bool = False
    action: str | None = None  # acknowledged | in_progress | done | cancelled | inspection
    finding: str | None = None
    note: str | None = None
    yes: bool = False
    no: bool = False
    actor: str | None = None  # "what did ana do"


def parse(
    text: str,
    machine_ids: dict[str, str],
    machine_types: list[str],
    reserved: set[str] | None = None,
    active: set[str] | None = None,
) -> Parsed:
    """Parse ``text`` against the fleet's ``machine_ids`` (lower-cased → stored) and types.
    ``reserved`` holds words shaped like ids that are not machines (sensor names, procedure
    codes from the manuals)."""
    reserved = reserved or set()
    p = Parsed(text=text)
    p.yes, p.no = bool(YES.match(text)), bool(NO.match(text))
    for intent, pattern in INTENTS.items():
        if pattern.search(text):
            p.intents.add(intent)
    nouns = MACHINE_NOUNS | {t.lower() for t in machine_types} | {t.lower() + "s" for t in machine_types}
    which = re.search(r"\bwhich\s+(\w+)", text, re.I)
    about_machines = which is not None and which.group(1).lower() in nouns  # "which harvester is worst"
    weak_risk = not INTENTS["at_risk"].search(WEAK_RISK.sub("", text)) and not about_machines
    if p.intents & {"procedure", "orders"} and "at_risk" in p.intents and weak_risk:
        p.intents.discard("at_risk")  # "urgent work orders", "what does urgent mean": not the at-risk list
    many = re.search(r"\bhow many\s+((?:[\w-]+\s+){0,3})", text + " ", re.I)
    if (
        many is not None
        and "summary" in p.intents
        and not re.search(r"\bhow many\b.*\bhow many\b", text, re.I)
    ):
        counted = set(many.group(1).lower().split())
        fleet_words = nouns | {
            "work",
            "orders",
            "order",
            "alerts",
            "at",
            "are",
            "is",
            "open",
            "active",
            "retired",
        }
        units = {"cycles", "hours", "days", "minutes", "flights", "readings"}
        if counted & units or re.search(r"\b(?:left|remain\w*)\b", text, re.I):
            p.intents.discard("summary")  # "how many hours has HV-004 got left": its RUL
            p.intents.add("status")
        elif not counted & fleet_words and not re.search(
            r"\boverview|summar|fleet status|count\b", text, re.I
        ):
            p.intents.discard("summary")  # "how many technicians does P-201 take": the manual's
            p.intents.add("procedure")
    if p.intents >= {"procedure", "status"} and re.search(r"\bhow much\b.*\b(?:life|left)\b", text, re.I):
        p.intents.discard("procedure")  # "how much life has it left": its RUL
    if p.intents >= {"procedure", "orders"} and not p.orders and not LISTING.search(text):
        p.intents.discard("orders")  # "if an order is urgent, must we ground the engine?": the manual's
    if "history" in p.intents and re.match(r"\s*(?:did|has|have|was|were)\b", text, re.I):
        p.intents.discard("procedure")  # "did anyone inspect it lately?" asks what happened, not how
    if DEFINITION.search(text):
        p.intents &= {"procedure", "help"}  # "what's the difference between …": the manual's words
        p.intents.add("procedure")
    order_spans = []
    nouns = MACHINE_NOUNS | {t.lower() for t in machine_types} | {t.lower() + "s" for t in machine_types}
    for match in ORDER_ID.finditer(text):
        before = re.findall(r"[\w-]+", text[: match.start()])
        if match.group(4) and before and before[-1].lower() in nouns:
            continue  # "machine #5" names a machine
        number = int(next(g for g in match.groups() if g))
        order_spans.append(match.span())
        if number not in p.orders:
            p.orders.append(number)
    p.machine_type = _machine_type(text, machine_types)
    _machines(text, p, machine_ids, machine_types, reserved, order_spans, active or set())
    ordinal = ORDINAL.search(text)
    if ordinal is not None:
        word = ordinal.group(1) or ordinal.group(3)
        place = str(ordinal.group(4) or "")
        spelled = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
        p.ordinal = ORDINALS[word.lower()] if word else spelled.get(place.lower()) or int(place)
    p.pronoun = bool(PRONOUN.search(text))
    p.order_pronoun = bool(ORDER_PRONOUN.search(text))
    p.action = _action(text, p, machine_ids)
    for finding, pattern in FINDINGS:
        if pattern.search(text):
            p.finding = finding
            break
    note = NOTE.search(text)
    if note is not None:
        p.note = (note.group(1) or note.group(2) or "").strip()[:2000] or None
    actor = re.search(r"\bwhat did ([A-Za-z0-9_.@-]{1,64}) do\b", text, re.I)
    if actor is not None:
        p.actor = actor.group(1)
    return p


def _action(text: str, p: Parsed, machine_ids: dict[str, str]) -> str | None:
    """The state an imperative asks a work order to move to (or ``inspection``), when the verb
    acts on something: "close WO-3", "acknowledge it", "start the second one", "record an
    inspection of H-017". Questions ("log inspection results?"), negations ("mark it as not
    done") and verbs about something else ("start the borescope steps") are not actions."""
    if text.rstrip().endswith("?") and not REQUEST.search(text):
        return None
    for status, pattern, object_first in ACTIONS:
        match = pattern.search(text)
        if match is None:
            continue
        rest = text[match.end() :]
        if NEGATED.search(text[match.start() : match.end() + 40]):
            return None
        if status == "inspection":
            words = re.findall(r"[\w-]+", rest)[:4]
            named = any(w.lower() in machine_ids for w in words) or TARGET.match(rest) is not None
            return status if named or not words else None
        if object_first:
            return status  # "mark WO-3 as done": the object came before the state
        if TARGET.match(rest) or _starts_with_machine(rest, machine_ids):
            return status
        return None
    return None


def _starts_with_machine(rest: str, machine_ids: dict[str, str]) -> bool:
    words = re.findall(r"[\w-]+", rest)[:3]
    return any(w.lower() in machine_ids for w in words if w.lower() not in ("the", "on", "for", "of"))


def unknown_type(text: str, known: str) -> str | None:
    """A kind of machine the question names that the fleet does not have ("how many tractors?"),
    from a vocabulary of machine nouns: the last one named that ``known`` (the fleet's type
    names, descriptions, components and manuals, lower case) never mentions."""
    unknown = None
    for match in KINDS.finditer(text):
        noun = match.group(1).lower()
        if not re.search(rf"\b{re.escape(noun)}", known):
            unknown = noun
    return unknown


def _machine_type(text: str, machine_types: list[str]) -> str | None:
    lowered = text.lower()
    for name in machine_types:
        stem = name.lower()
        if re.search(rf"\b{re.escape(stem)}(?:s|es)?\b", lowered):
            return name
    return None


def _machines(
    text: str,
    p: Parsed,
    machine_ids: dict[str, str],
    machine_types: list[str],
    reserved: set[str],
    order_spans: list[tuple[int, int]],
    active: set[str],
) -> None:
    prefixes = {_prefix(m) for m in machine_ids}

    def inside_order(start: int) -> bool:
        return any(a <= start < b for a, b in order_spans)

    for match in TOKEN.finditer(text):
        token = match.group(0).rstrip(".:/-")
        if inside_order(match.start()):
            continue
        stored = machine_ids.get(token.lower())
        if stored is not None:
            if stored not in p.machines:
                p.machines.append(stored)
        elif _is_code(token, text[: match.start()], reserved):
            if token.upper() not in p.codes:
                p.codes.append(token.upper())
        elif (
            _looks_like_id(token, prefixes)
            and token.lower() not in reserved
            and token not in p.unknown_machines
        ):
            p.unknown_machines.append(token)
    # "engine 31", "harvester 17", "machine #5": a noun and a number
    nouns = MACHINE_NOUNS | {t.lower() for t in machine_types} | {t.lower() + "s" for t in machine_types}
    for noun, number in NUMBERED.findall(text):
        if noun.lower() not in nouns:
            continue
        want = int(number)
        candidates = [
            stored
            for stored in machine_ids.values()
            if (tail := re.search(r"(\d+)\D*$", stored)) is not None and int(tail.group(1)) == want
        ]
        type_noun = next((t for t in machine_types if noun.lower().rstrip("s") == t.lower()), None)
        if type_noun is not None:
            candidates = [c for c in candidates if c.lower().startswith(type_noun.lower()[:1])] or candidates
        candidates = [c for c in candidates if c in active] or candidates  # in service first
        if len(candidates) == 1:
            if candidates[0] not in p.machines:
                p.machines.append(candidates[0])
        elif len(candidates) > 1:
            p.ambiguous[f"{noun} {number}"] = sorted(candidates)[:10]
        else:
            p.unknown_machines.append(f"{noun} {number}")


def _prefix(machine_id: str) -> str:
    return re.sub(r"[-_.:/]?\d.*$", "", machine_id.lower())


def _looks_like_id(token: str, prefixes: set[str]) -> bool:
    """Shaped like a machine id: letters, a separator and a number ("zzz-999"), or letters and a
    number with a prefix the fleet's ids use ("eng999" in a fleet of "eng-001"…)."""
    if SEPARATED_ID.match(token):
        return True
    joined = JOINED_ID.match(token)
    return joined is not None and joined.group(1).lower() in prefixes


def _is_code(token: str, before: str, reserved: set[str]) -> bool:
    """A manual's code ("P-101", known from the manuals), or any code the message calls a
    procedure ("procedure P-999"): not a machine."""
    if token.lower() in reserved:
        return bool(re.match(r"^[a-z]{1,4}-\d{2,4}$", token, re.I))
    return bool(re.search(r"\bprocedures?\s*$", before, re.I)) and bool(
        re.match(r"^[a-z]{1,4}-\d+$", token, re.I)
    )
