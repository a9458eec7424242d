"""The maintenance assistant: a conversation per user, answers from tool calls on live state and
the manuals, actions only after the user's own "yes".

Deterministic by default (intents + slots + tools + templates); with an LLM configured, the
model phrases answers from the same tools and its answer is checked against their results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pitstop.assistant import answers
from pitstop.assistant.actions import LEAST_ROLE, PERMISSION, Executors, execute, question
from pitstop.assistant.conversations import Conversations
from pitstop.assistant.grounding import strip_unsupported
from pitstop.assistant.llm import focus, remember
from pitstop.assistant.proposals import propose
from pitstop.assistant.records import CODE
from pitstop.assistant.tools import Toolbox, ToolResult
from pitstop.assistant.understand import Parsed, parse
from pitstop.errors import first_line

if TYPE_CHECKING:
    from pitstop.assistant.knowledge import KnowledgeBase
    from pitstop.assistant.llm import LlmAnswerer
    from pitstop.platform import Platform

log = logging.getLogger(__name__)

CONFIRM_WITHIN_S = 600.0  # a proposal not confirmed within this is dropped
ROLE_CHECK = Callable[[str, str], bool]  # (role, permission) -> allowed
WITHHELD = "(The language model's answer was withheld: it stated figures no tool returned.)"


@dataclass
class Reply:
    """One answer: its text, the sources it cites, the actions it proposed or took."""

    conversation_id: str
    answer: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)
    answered_by: str = "templates"

    @property
    def text(self) -> str:
        return self.answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "answer": self.answer,
            "sources": self.sources,
            "actions": self.actions,
            "intents": self.intents,
            "answered_by": self.answered_by,
        }


@dataclass
class Turn:
    """What one turn gathers: sentences, the tool results behind them, actions, new context."""

    parsed: Parsed
    context: dict[str, Any]
    user: str
    role: str
    parts: list[str] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def add(self, text: str | list[str], result: ToolResult | None = None) -> None:
        """Sentences (one part, or several) and the tool result they rest on."""
        self.parts.extend([text] if isinstance(text, str) else text)
        if result is not None:
            self.results.append(result)

    def sources(self) -> list[dict[str, Any]]:
        seen: set[tuple[str, str]] = set()
        found = []
        for result in self.results:
            for source in result.sources:
                key = (source["kind"], str(source["id"]))
                if key not in seen:
                    seen.add(key)
                    found.append(source)
        return found


class Assistant:
    """Answers maintenance questions in conversations, within the asking user's role."""

    def __init__(
        self,
        tools: Toolbox,
        conversations: Conversations,
        executors: Executors,
        can: ROLE_CHECK,
        llm: LlmAnswerer | None = None,
    ) -> None:
        self.tools = tools
        self.conversations = conversations
        self.executors = executors
        self.can = can
        self.llm = llm
        self._reserved: set[str] | None = None
        self._locks = [threading.Lock() for _ in range(64)]

    @classmethod
    def from_platform(
        cls, platform: Platform, can: ROLE_CHECK, knowledge: KnowledgeBase | None = None
    ) -> Assistant:
        from pitstop.assistant.knowledge import KnowledgeBase
        from pitstop.assistant.llm import LlmAnswerer

        settings = platform.settings
        kb = knowledge or KnowledgeBase.load(
            settings.data_dir / "manuals", platform.fleet, retrieval=settings.manuals_retrieval
        )
        return cls(
            Toolbox.from_platform(platform, kb),
            Conversations(platform.db),
            Executors.from_platform(platform),
            can,
            LlmAnswerer.from_settings(platform.settings),
        )

    # -- the public entry points ----------------------------------------------------------------

    def chat(self, message: str, *, user: str, role: str, conversation_id: str | None = None) -> Reply:
        """Answer ``message`` in a conversation of ``user`` (a new one without an id) and keep it."""
        started = time.perf_counter()
        with self._locks[hash(conversation_id) % len(self._locks)]:  # one turn at a time per conversation
            conversation_id, context, stored = self.conversations.context(user, conversation_id)
            cid = conversation_id

            def claim(after: dict[str, Any]) -> bool:
                return self.conversations.claim(user, cid, stored, after)

            reply = self._answer(message.strip(), user, role, context, conversation_id, claim=claim)
            self.conversations.record(
                user, conversation_id, message.strip(), reply.to_dict(), context, new=stored is None
            )
        log.debug("assistant answered in %.1f ms", (time.perf_counter() - started) * 1000)
        return reply

    def ask(self, question_text: str, *, user: str = "cli", role: str = "viewer") -> Reply:
        """A one-off question, not kept (``POST /api/v1/assistant/ask``); no actions."""
        reply = self._answer(question_text.strip(), user, role, {}, "", actions=False)
        parsed = parse(question_text, self.tools.machine_ids()[0], self.tools.machine_types())
        if parsed.action is not None:
            note = "Actions need a conversation, where you confirm them: POST /api/v1/assistant/chat."
            reply.answer = f"{note}\n\n{reply.answer}"
        return reply

    # -- one turn ---------------------------------------------------------------------------------

    def _answer(
        self,
        message: str,
        user: str,
        role: str,
        context: dict[str, Any],
        conversation_id: str,
        actions: bool = True,
        claim: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> Reply:
        tools = self.tools
        ids, active = tools.machine_ids()
        parsed = parse(message, ids, tools.machine_types(), self.reserved(), active)
        turn = Turn(parsed, context, user, role)
        pending = context.pop("pending", None)
        if pending is not None and (parsed.yes or parsed.no):
            self._confirm(turn, pending, conversation_id, claim)
            return self._finish(turn, conversation_id, "templates")
        if pending is not None:  # anything else drops the proposal
            dropped = ToolResult("pending", {}, dict(pending))
            turn.add(
                f"(The earlier request, “{question(pending)}”, was not confirmed; nothing changed.)", dropped
            )
        if parsed.yes and not parsed.action:
            turn.add("There is nothing waiting for your confirmation.")
        elif actions and parsed.action is not None:
            action, text, result = propose(parsed, context, role, self.can, self.tools)
            turn.add(text, result)
            if action is not None:
                if action["state"] == "proposed":
                    context["pending"] = action
                turn.actions.append(action)
        else:
            return self._finish(turn, conversation_id, self._question(turn))
        return self._finish(turn, conversation_id, "templates")

    def _finish(self, turn: Turn, conversation_id: str, answered_by: str) -> Reply:
        text = "\n\n".join(p for p in turn.parts if p)
        checked, missing = strip_unsupported(text, turn.results, turn.parsed.text)
        if missing:  # a template bug, never shown as fact: log it loudly
            log.warning("assistant answer stated facts no tool returned (dropped): %s", missing)
            text = checked or "I cannot answer that from what the tools returned."
        intents = sorted(turn.parsed.intents) + (["action"] if turn.actions else [])
        return Reply(conversation_id, text, turn.sources(), turn.actions, intents, answered_by)

    def _confirm(
        self,
        turn: Turn,
        pending: dict[str, Any],
        conversation_id: str,
        claim: Callable[[dict[str, Any]], bool],
    ) -> None:
        if not claim(turn.context):  # another turn answered this proposal first
            turn.add("That request was answered already in this conversation: nothing more changed.")
            return
        if turn.parsed.no:
            turn.actions.append({**pending, "state": "cancelled"})
            turn.add("Cancelled: nothing changed.")
            return
        if time.time() - float(pending.get("proposed_at", 0)) > CONFIRM_WITHIN_S:
            turn.actions.append({**pending, "state": "expired"})
            minutes = round(CONFIRM_WITHIN_S / 60)
            turn.add(f"That request is older than {minutes} minutes: ask again. Nothing changed.")
            return
        if not self.can(turn.role, PERMISSION[pending["type"]]):
            turn.actions.append({**pending, "state": "refused"})
            turn.add(f"Your role ({turn.role}) cannot do that; a {LEAST_ROLE[pending['type']]} can.")
            return
        key = f"assistant:{conversation_id}:{pending['id']}"
        text, done = execute(pending, self.executors, turn.user, turn.role, key)
        turn.actions.append(done)
        sources = [{"kind": "audit", "id": "latest", "url": "/audit", "title": "the audit log"}]
        if pending.get("work_order"):
            sources.insert(0, self.tools.work_order(int(pending["work_order"])).sources[0])
        turn.add(text, ToolResult("action", {}, done, sources))
        if pending.get("work_order"):
            turn.context["order"] = pending["work_order"]
        turn.context["machine"] = pending["machine_id"]

    def _question(self, turn: Turn) -> str:
        from pitstop.assistant.questions import answer_question

        if self.llm is None:
            answer_question(turn, self.tools, self.can)
            return "templates"
        question_text, before, refused = turn.parsed.text, len(turn.parts), False
        try:
            text, results = self.llm.answer(turn, self.tools, self.can)
        except Exception as exc:  # the model is down or misbehaves: the templates answer
            log.warning("the LLM did not answer (%s); answering from templates", first_line(exc))
        else:
            # the model's figures must come from its tools: what the user typed is no evidence
            checked, missing = strip_unsupported(text, results)
            if missing:
                log.warning("LLM answer: removed what stated %s, which no tool returned", missing)
            if checked:
                turn.parts.append(checked)
                turn.results.extend(results)
                focus(turn.context, results, checked)
                answer_question(turn, self.tools, self.can, context_only=True)
                remember(turn.context, question_text, checked)
                return "llm"
            refused = True
        answer_question(turn, self.tools, self.can)
        if refused:
            turn.parts.insert(before, WITHHELD)
        remember(turn.context, question_text, "\n\n".join(turn.parts[before:]))
        return "templates"

    def reserved(self) -> set[str]:
        """Words shaped like machine ids that are not machines: sensors and manual codes."""
        if self._reserved is None:
            words = {s.lower() for mt in self.tools.fleet.machine_types.values() for s in mt.sensor_names}
            for section in self.tools.knowledge.sections:  # procedure codes: "P-101", "H-203"
                words |= {c.lower() for c in CODE.findall(f"{section.title} {section.text}")}
            self._reserved = words
        return self._reserved


__all__ = ["Assistant", "Reply", "answers"]
