"""From a message to what it asks: intents and slots, deterministic (no model, no randomness).

Slots are resolved against the live fleet: a machine is named by its id as stored (any naming
scheme), or by a noun and a number ("engine 31", "harvester 17") matched against the ids' trailing
numbers; "it", "that machine" and "the second one" are left for the conversation to resolve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# words a fleet id never is, even when shaped like one
_ORDINALS = {
    "first": 1,
    "1st": 1,
    "second": 2,
    "2nd": 2,
    "third": 3,
    "3rd": 3,
    "fourth": 4,
    "4th": 4,
    "fifth": 5,
    "5th": 5,
    "sixth": 6,
    "6th": 6,
    "seventh": 7,
    "7th": 7,
    "eighth": 8,
    "8th": 8,
    "ninth": 9,
    "9th": 9,
    "tenth": 10,
    "10th": 10,
    "last": -1,
}
_ORDINAL = re.compile(
    r"\b(?:the\s+)?(" + "|".join(_ORDINALS) + r")\s+(one|machine|engine|unit|order|work order|item|entry)\b"
    r"|\bthe\s+(" + "|".join(_ORDINALS) + r")\b|\bnumber\s+(\d{1,2})\s+(?:on|in)\s+the\s+list\b",
    re.I,
)
_PRONOUN = re.compile(
    r"\b(it|its|it's|itself|that machine|this machine|the machine|that one|this one|that engine|"
    r"this engine|that harvester|this harvester|same machine|that unit|this unit|that call|that prediction|"
    r"that estimate|that number|they|them)\b",
    re.I,
)
_ORDER_PRONOUN = re.compile(r"\b(that|this|the|its|same)\s+(work\s*order|order|wo|ticket)\b", re.I)
_ORDER_ID = re.compile(
    r"\bWO[-\s#]?(\d{1,9})\b|\bwork[-\s]?orders?\s*(?:no\.?|number|#)?\s*#?(\d{1,9})\b"
    r"|\border\s*(?:no\.?|number|#)\s*(\d{1,9})\b|(?<![\w-])#(\d{1,9})\b",
    re.I,
)
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*[A-Za-z0-9]|[A-Za-z0-9]")
_SEPARATED_ID = re.compile(r"^[a-z]+[-_.:/][a-z0-9_-]*\d[a-z0-9_-]*$", re.I)
_JOINED_ID = re.compile(r"^([a-z]+)\d+$", re.I)
_NUMBERED = re.compile(r"\b([a-z]+)\s*(?:no\.?|number|#)?\s*#?(\d{1,6})\b", re.I)
_KINDS = re.compile(
    r"\b(harvester|pump|tractor|truck|compressor|turbine|turbofan|motor|conveyor|crane|forklift|generator|"
    r"boiler|chiller|robot|excavator|loader|locomotive|elevator|escalator|press|lathe|drone|vessel|ship|"
    r"bus|car|van|train|aircraft|airplane|helicopter|wind turbine|mixer|centrifuge|shaker)(?:s|es)?\b",
    re.I,
)
_MACHINE_NOUNS = {"machine", "machines", "unit", "units", "engine", "engines", "asset", "assets"}

_DEFINITION = re.compile(
    r"\bdifference between\b|\bwhat (?:does|do) [\w\s'-]+ mean\b|\bwhat is meant by\b|\bdefin(?:e|ition)\b|"
    r"\bhow (?:do|can|should) (?:i|we|you) (?:close|acknowledge|start|cancel|open|record|create|log) "
    r"(?:a|an)\b",
    re.I,
)
_LISTING = re.compile(r"\b(?:which|list|show|open|how many|any|all|mine|my)\b", re.I)
_WEAK_RISK = re.compile(
    r"\burgent\b|\bcritical\b|\battention\b|\brisk\w*\b|\bwhich\b[^?.]*\b(?:first|next|soonest|worst)\b", re.I
)
YES = re.compile(
    r"^\s*(?:yes|y|yep|yeah|yup|sure|confirm|confirmed|ok|okay|do it|go ahead|please do|proceed)"
    r"(?:[,\s]+(?:please|do it|go ahead|thanks|thank you|confirm(?:ed)?))*\s*[.!]*\s*$",
    re.I,
)
# a "no" to a pending proposal: the message starts by refusing ("no, cancel that", "don't")
NO = re.compile(
    r"^\s*(?:no|n|nope|nah|cancel|abort|stop|don't|do not|dont|never ?mind|forget it|hold off|wait|not yet)\b"
    r"(?![-\s]*fault)",
    re.I,
)
_FINDINGS = (
    (
        "no_fault_found",
        re.compile(r"\bno[-\s]fault(?:[-\s]found)?\b|\bnff\b|\bnothing (?:wrong|found)\b", re.I),
    ),
    (
        "fault_confirmed",
        re.compile(r"\bfault[-\s]confirmed\b|\bconfirmed(?:\s+the)?\s+fault\b|\bfault found\b", re.I),
    ),
    ("other", re.compile(r"\b(?:as|finding)\s+other\b|\bother work\b", re.I)),
)
_POLITE = (
    r"(?:^|[,.;:!?]\s*|\b(?:and|then|so|now|just)\s+)\s*(?:please\s+|pls\s+|can you\s+|could you\s+|"
    r"would you\s+|i want to\s+|i'd like to\s+|let's\s+|go\s+|you can\s+)*"
)
# (state, pattern, whether the object comes before the verb: "mark WO-3 as done")
_ACTIONS = (
    ("acknowledged", re.compile(_POLITE + r"(?:acknowledge|ack)\b", re.I), False),
    ("in_progress", re.compile(_POLITE + r"(?:start|begin)\b", re.I), False),
    ("done", re.compile(_POLITE + r"(?:close|complete|finish|resolve)\b", re.I), False),
    ("cancelled", re.compile(_POLITE + r"cancel\b(?!\s*$)", re.I), False),
    (
        "inspection",
        re.compile(_POLITE + r"(?:record|log|add|register|note)\s+(?:an?\s+)?inspection\b", re.I),
        False,
    ),
    (
        "in_progress",
        re.compile(r"\b(?:i'?m|i am|we'?re|we are)\s+(?:now\s+)?(?:starting|beginning)(?:\s+work)?\b", re.I),
        False,
    ),
    ("done", re.compile(_POLITE + r"mark\b.*\b(?:as\s+)?(?:done|closed|complete|completed)\b", re.I), True),
    ("in_progress", re.compile(_POLITE + r"mark\b.*\b(?:as\s+)?(?:in progress|started)\b", re.I), True),
    ("acknowledged", re.compile(_POLITE + r"mark\b.*\b(?:as\s+)?acknowledged\b", re.I), True),
)
# what an action acts on, in the few words after its verb: a work order, a pronoun, an ordinal
_TARGET = re.compile(
    r"^\W*(?:(?:work|working)\s+on\s+|on\s+|of\s+|for\s+)?(?:the\s+|my\s+|this\s+|that\s+|its\s+|our\s+)?"
    r"(?:(?:first|second|third|fourth|fifth|last|\d+(?:st|nd|rd|th))\s+"
    r"(?:one|order|work order|machine|engine)\b|"
    r"(?:machine|engine|unit|asset|harvester)\s*(?:no\.?|number|#)?\s*\d+\b|"
    r"WO[-\s#]?\d+\b|#\d+\b|work\s*orders?\b|orders?\b|tickets?\b|jobs?\b|it\b|them\b|that\b|this\b|one\b)",
    re.I,
)
_NEGATED = re.compile(r"\bnot\b|\bdon'?t\b|\bnever\b|\bno longer\b", re.I)
_REQUEST = re.compile(r"^\s*(?:please|pls|can you|could you|would you|will you)\b|\bplease\b", re.I)
_NOTE = re.compile(r"\b(?:note|notes|comment|saying|with note)\s*[:=]\s*(.+)$|[\"“](.+?)[\"”]", re.I | re.S)

INTENTS = {
    "audit": re.compile(
        r"\bwho\s+(?:closed|acknowledged|started|cancelled|canceled|promoted|rolled|opened|changed|did|"
        r"recorded|released|worked)\b|\baudit\b|\bwhat did \w+ do\b|\brecent actions\b|\bactivity\b",
        re.I,
    ),
    "procedure": re.compile(
        r"\bhow (?:do|can|should|would) (?:i|we|you)\b|\bhow to\b|\bprocedure\b|\bsteps?\b|\binstructions?\b|"
        r"\bwhat should (?:i|we) (?:do|check)\b|\bwhat does .* mean\b|\bsymptoms?\b|\bmeans?\b|\bfix\b|"
        r"\brepair it\b|\binspect\b|\btorque\b|\bhow often\b|\bchecklist\b|\bmanual\b|\bguide\b|\bexplain\b|"
        r"\bwhat is (?:a|an|the) [a-z ]*(?:wash|inspection|test|check|overhaul)\b|\bdifference between\b|"
        r"\bwalk me through\b|\breplac\w*\b|\bset to\b|\bsettings? for\b|\bspecs?\b|\bspecification\b|"
        r"\bhow much\b|\bdo (?:we|i) (?:have|need) to\b|\bmust (?:we|i)\b|"
        r"\bhow long (?:does|will|would|do)\b.*\btake\b|"
        r"\bremind me\b|\bwhat (?:is|are) (?:a|an|the)\s+[\w\s-]*?priorit\w*\b|\bregrease\b|\binterval for\b",
        re.I,
    ),
    "history": re.compile(
        r"\bhistory\b|\blast (?:serviced|repaired|maintained|inspected|failed|failure|maintenance|service|"
        r"repair|inspection)\b|\bwhen was\b.*\b(?:serviced|repaired|maintained|inspected|fixed|replaced)\b|"
        r"\bpast (?:failures|repairs|maintenance)\b|\bprevious (?:failures|repairs|maintenance)\b|"
        r"\b(?:failures|repairs|events)\b|\bfailed\b|\brecently\b|\blately\b|"
        r"\b(?:did|has|have) (?:anyone|someone|somebody|we|they|you) (?:ever )?"
        r"(?:inspect|servic|repair|maint|check|look|work)\w*\b|\bbroke(?:n)?(?: down)?\b|"
        r"\bever (?:fail|break)\w*\b",
        re.I,
    ),
    "trend": re.compile(
        r"\btrend\b|\bover time\b|\bprediction history\b|\b(?:recent|past|last) predictions\b|"
        r"\bhow has\b|\bchang(?:ed|ing)\b|\bdropp(?:ed|ing)\b|\bgetting worse\b|\bdeclin|\bmov(?:ed|ing)\b|"
        r"\bevolv\w*\b|\bprogress(?:ed|ing|ion)\b|\bwent\b",
        re.I,
    ),
    "orders": re.compile(
        r"\bwork[-\s]?orders?\b|\bWO[-\s#]?\d+\b|\borders?\b|\btickets?\b|\bjobs?\b|\bbacklog\b|\boverdue\b|"
        r"\bdue\b",
        re.I,
    ),
    "alerts": re.compile(
        r"\bdrift(?:ing)?\b|\balerts?\b|\balarms?\b|\bdata quality\b|\bsensor faults?\b|\banomal\w*\b|"
        r"\bfiring\b|\bfaulty sensors?\b|\bmonitoring\b",
        re.I,
    ),
    "models": re.compile(
        r"\bmodels?\b|\bchampion\b|\bchallenger\b|\bmodel version\b|\bwhich version\b|\bretrain\w*\b",
        re.I,
    ),
    "at_risk": re.compile(
        r"\bat[-\s]risk\b|\brisk\w*\b|\bworst\b|\bneeds? attention\b|\battention\b|\burgent\b|\bsoonest\b|"
        r"\blowest\b|\bfail (?:next|first|soon)\b|\bclosest to failure\b|\bcritical\b|"
        r"\bwhich (?:machines|engines|harvesters|units)\b|\bwhat machines\b|\btop \d+\b|"
        r"\bwhich(?:ever)?\b[^?.]*\b(?:first|next|soonest|most urgent|worst)\b|"
        r"\bneeds? (?:a )?(?:mechanic|fitter|service)\b",
        re.I,
    ),
    "best": re.compile(
        r"\bbest (?:shape|condition)\b|\bhealthiest\b|\bmost (?:life|rul)\b|\bfurthest from\b|\bleast worn\b",
        re.I,
    ),
    "summary": re.compile(
        r"\bhow many\b|\boverview\b|\bsummary\b|\bsummari[sz]e\b|\bfleet status\b|\bstatus of the fleet\b|"
        r"\bhow is the fleet\b|\bcount\b",
        re.I,
    ),
    "status": re.compile(
        r"\bstatus\b|\bhow is\b|\bhow's\b|\bdoing\b|\bhealth\w*\b|\bRUL\b|\bremaining (?:useful )?life\b|"
        r"\bpredict\w*\b|\bcondition\b|\bok\b|\bwhen will\b|\bhow long\b|\bfail\b|\binterval\b|\bthreshold\b|"
        r"\blife\b|\bleft\b",
        re.I,
    ),
    "help": re.compile(r"^\s*(?:help|\?|what can you do\??|hi|hello|hey)\s*[.!?]*\s*$", re.I),
}


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
    nouns = _MACHINE_NOUNS | {t.lower() for t in machine_types} | {t.lower() + "s" for t in machine_types}
    which = re.search(r"\bwhich\s+(\w+)", text, re.I)
    about_machines = which is not None and which.group(1).lower() in nouns  # "which harvester is worst"
    weak_risk = not INTENTS["at_risk"].search(_WEAK_RISK.sub("", text)) and not about_machines
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
    if p.intents >= {"procedure", "orders"} and not p.orders and not _LISTING.search(text):
        p.intents.discard("orders")  # "if an order is urgent, must we ground the engine?": the manual's
    if "history" in p.intents and re.match(r"\s*(?:did|has|have|was|were)\b", text, re.I):
        p.intents.discard("procedure")  # "did anyone inspect it lately?" asks what happened, not how
    if _DEFINITION.search(text):
        p.intents &= {"procedure", "help"}  # "what's the difference between …": the manual's words
        p.intents.add("procedure")
    order_spans = []
    nouns = _MACHINE_NOUNS | {t.lower() for t in machine_types} | {t.lower() + "s" for t in machine_types}
    for match in _ORDER_ID.finditer(text):
        before = re.findall(r"[\w-]+", text[: match.start()])
        if match.group(4) and before and before[-1].lower() in nouns:
            continue  # "machine #5" names a machine
        number = int(next(g for g in match.groups() if g))
        order_spans.append(match.span())
        if number not in p.orders:
            p.orders.append(number)
    p.machine_type = _machine_type(text, machine_types)
    _machines(text, p, machine_ids, machine_types, reserved, order_spans, active or set())
    ordinal = _ORDINAL.search(text)
    if ordinal is not None:
        word = ordinal.group(1) or ordinal.group(3)
        p.ordinal = _ORDINALS[word.lower()] if word else int(ordinal.group(4))
    p.pronoun = bool(_PRONOUN.search(text))
    p.order_pronoun = bool(_ORDER_PRONOUN.search(text))
    p.action = _action(text, p, machine_ids)
    for finding, pattern in _FINDINGS:
        if pattern.search(text):
            p.finding = finding
            break
    note = _NOTE.search(text)
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
    if text.rstrip().endswith("?") and not _REQUEST.search(text):
        return None
    for status, pattern, object_first in _ACTIONS:
        match = pattern.search(text)
        if match is None:
            continue
        rest = text[match.end() :]
        if _NEGATED.search(text[match.start() : match.end() + 40]):
            return None
        if status == "inspection":
            words = re.findall(r"[\w-]+", rest)[:4]
            named = any(w.lower() in machine_ids for w in words) or _TARGET.match(rest) is not None
            return status if named or not words else None
        if object_first:
            return status  # "mark WO-3 as done": the object came before the state
        if _TARGET.match(rest) or _starts_with_machine(rest, machine_ids):
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
    for match in _KINDS.finditer(text):
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

    for match in _TOKEN.finditer(text):
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
    nouns = _MACHINE_NOUNS | {t.lower() for t in machine_types} | {t.lower() + "s" for t in machine_types}
    for noun, number in _NUMBERED.findall(text):
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
    if _SEPARATED_ID.match(token):
        return True
    joined = _JOINED_ID.match(token)
    return joined is not None and joined.group(1).lower() in prefixes


def _is_code(token: str, before: str, reserved: set[str]) -> bool:
    """A manual's code ("P-101", known from the manuals), or any code the message calls a
    procedure ("procedure P-999"): not a machine."""
    if token.lower() in reserved:
        return bool(re.match(r"^[a-z]{1,4}-\d{2,4}$", token, re.I))
    return bool(re.search(r"\bprocedures?\s*$", before, re.I)) and bool(
        re.match(r"^[a-z]{1,4}-\d+$", token, re.I)
    )
