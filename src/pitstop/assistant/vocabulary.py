"""The words the assistant understands: the patterns of intents, actions, references and
answers to a proposal (``understand`` applies them)."""

from __future__ import annotations

import re

ORDINALS = {
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
ORDINAL = re.compile(
    r"\b(?:the\s+)?(" + "|".join(ORDINALS) + r")\s+(one|machine|engine|unit|order|work order|item|entry)\b"
    r"|\bthe\s+("
    + "|".join(ORDINALS)
    + r")\b|\bnumber\s+(\d{1,2}|one|two|three|four|five)\s+(?:on|in)\s+(?:the|that)\s+list\b",
    re.I,
)
PRONOUN = re.compile(
    r"\b(it|its|it's|itself|that machine|this machine|the machine|that one|this one|that engine|"
    r"this engine|that harvester|this harvester|same machine|that unit|this unit|that call|that prediction|"
    r"that estimate|that number|they|them)\b",
    re.I,
)
ORDER_PRONOUN = re.compile(r"\b(that|this|the|its|same)\s+(work\s*order|order|wo|ticket)\b", re.I)
ORDER_ID = re.compile(
    r"\bWO[-\s#]?(\d{1,9})\b|\bwork[-\s]?orders?\s*(?:no\.?|number|#)?\s*#?(\d{1,9})\b"
    r"|\border\s*(?:no\.?|number|#)\s*(\d{1,9})\b|(?<![\w-])#(\d{1,9})\b",
    re.I,
)
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*[A-Za-z0-9]|[A-Za-z0-9]")
SEPARATED_ID = re.compile(r"^[a-z]+[-_.:/][a-z0-9_-]*\d[a-z0-9_-]*$", re.I)
JOINED_ID = re.compile(r"^([a-z]+)\d+$", re.I)
NUMBERED = re.compile(r"\b([a-z]+)\s*(?:no\.?|number|#)?\s*#?(\d{1,6})\b", re.I)
KINDS = re.compile(
    r"\b(harvester|pump|tractor|truck|compressor|turbine|turbofan|motor|conveyor|crane|forklift|generator|"
    r"boiler|chiller|robot|excavator|loader|locomotive|elevator|escalator|press|lathe|drone|vessel|ship|"
    r"bus|car|van|train|aircraft|airplane|helicopter|wind turbine|mixer|centrifuge|shaker)(?:s|es)?\b",
    re.I,
)
MACHINE_NOUNS = {"machine", "machines", "unit", "units", "engine", "engines", "asset", "assets"}

DEFINITION = re.compile(
    r"\bdifference between\b|\bwhat (?:does|do) [\w\s'-]+ mean\b|\bwhat is meant by\b|\bdefin(?:e|ition)\b|"
    r"\bhow (?:do|can|should) (?:i|we|you) (?:close|acknowledge|start|cancel|open|record|create|log) "
    r"(?:a|an)\b",
    re.I,
)
LISTING = re.compile(r"\b(?:which|list|show|open|how many|any|all|mine|my)\b", re.I)
WEAK_RISK = re.compile(
    r"\burgent\b|\bcritical\b|\battention\b|\brisk\w*\b|\bwhich\b[^?.]*\b(?:first|next|soonest|worst)\b", re.I
)
YES = re.compile(
    r"^\s*(?:yes|y|yep|yeah|yup|sure|confirm|confirmed|ok|okay|do it|go ahead|please do|proceed)"
    r"(?:[,\s]+(?:please|do it|go ahead|thanks|thank you|confirm(?:ed)?))*\s*[.!]*\s*$",
    re.I,
)
# a "no" to a pending proposal: the message starts by refusing ("no, cancel that", "don't")
NO = re.compile(
    r"^\s*(?:(?:actually|hmm+|oh|sorry|um+|er+|hang on|on second thought)[,.!\s]+)*"
    r"(?:no|n|nope|nah|cancel|abort|stop|don't|do not|dont|never ?mind|forget it|hold off|wait|not yet)\b"
    r"(?![-\s]*fault)",
    re.I,
)
FINDINGS = (
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
POLITE = (
    r"(?:^|[,.;:!?]\s*|\b(?:and|then|so|now|just)\s+)\s*(?:please\s+|pls\s+|can you\s+|could you\s+|"
    r"would you\s+|i want to\s+|i'd like to\s+|let's\s+|go\s+|you can\s+)*"
)
# (state, pattern, whether the object comes before the verb: "mark WO-3 as done")
ACTIONS = (
    ("acknowledged", re.compile(POLITE + r"(?:acknowledge|ack)\b", re.I), False),
    ("in_progress", re.compile(POLITE + r"(?:start|begin)\b", re.I), False),
    ("done", re.compile(POLITE + r"(?:close|complete|finish|resolve)\b", re.I), False),
    ("cancelled", re.compile(POLITE + r"cancel\b(?!\s*$)", re.I), False),
    (
        "inspection",
        re.compile(POLITE + r"(?:record|log|add|register|note|put)\s+(?:an?\s+)?inspection\b", re.I),
        False,
    ),
    (
        "in_progress",
        re.compile(r"\b(?:i'?m|i am|we'?re|we are)\s+(?:now\s+)?(?:starting|beginning)(?:\s+work)?\b", re.I),
        False,
    ),
    ("done", re.compile(POLITE + r"mark\b.*\b(?:as\s+)?(?:done|closed|complete|completed)\b", re.I), True),
    ("in_progress", re.compile(POLITE + r"mark\b.*\b(?:as\s+)?(?:in progress|started)\b", re.I), True),
    ("acknowledged", re.compile(POLITE + r"mark\b.*\b(?:as\s+)?acknowledged\b", re.I), True),
)
# what an action acts on, in the few words after its verb: a work order, a pronoun, an ordinal
TARGET = re.compile(
    r"^\W*(?:(?:work|working)\s+on\s+|on\s+|of\s+|for\s+)?(?:the\s+|my\s+|this\s+|that\s+|its\s+|our\s+)?"
    r"(?:(?:first|second|third|fourth|fifth|last|\d+(?:st|nd|rd|th))\s+"
    r"(?:one|order|work order|machine|engine)\b|"
    r"(?:machine|engine|unit|asset|harvester)\s*(?:no\.?|number|#)?\s*\d+\b|"
    r"WO[-\s#]?\d+\b|#\d+\b|work\s*orders?\b|orders?\b|tickets?\b|jobs?\b|it\b|them\b|that\b|this\b|one\b)",
    re.I,
)
NEGATED = re.compile(r"\bnot\b|\bdon'?t\b|\bnever\b|\bno longer\b", re.I)
REQUEST = re.compile(r"^\s*(?:please|pls|can you|could you|would you|will you)\b|\bplease\b", re.I)
NOTE = re.compile(r"\b(?:note|notes|comment|saying|with note)\s*[:=]\s*(.+)$|[\"“](.+?)[\"”]", re.I | re.S)

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
        r"\bhow long\b.*\btake\b|\bcan (?:the machine|it|we|i) (?:keep|continue|still|run)\b|"
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
        r"\blife\b|\bleft\b|\bwork order (?:get )?(?:raised|opened|triggered)\b|\btrigger\w*\b|"
        r"\bget a work order\b",
        re.I,
    ),
    "help": re.compile(r"^\s*(?:help|\?|what can you do\??|hi|hello|hey)\s*[.!?]*\s*$", re.I),
}
