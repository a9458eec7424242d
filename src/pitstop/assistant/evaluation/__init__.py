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

from pitstop.assistant.evaluation.cases import CATEGORIES, Case, Expect, load_cases
from pitstop.assistant.evaluation.facts import check_cite, check_fact, foreign_manuals, invented
from pitstop.assistant.evaluation.generate import generated_cases
from pitstop.assistant.evaluation.run import Outcome, Report, run_case, run_set
from pitstop.assistant.evaluation.snapshot import Call, Snapshot

__all__ = [
    "CATEGORIES",
    "Call",
    "Case",
    "Expect",
    "Outcome",
    "Report",
    "Snapshot",
    "check_cite",
    "check_fact",
    "foreign_manuals",
    "generated_cases",
    "invented",
    "load_cases",
    "run_case",
    "run_set",
]
