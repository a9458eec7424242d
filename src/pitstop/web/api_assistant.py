"""The maintenance assistant over HTTP: conversations per logged-in user, one-off questions."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pitstop.assistant import Assistant
from pitstop.errors import RateLimitedError, ValidationError
from pitstop.web.routing import OrjsonRoute
from pitstop.web.users import Principal

router = APIRouter(prefix="/api/v1/assistant", tags=["assistant"], route_class=OrjsonRoute)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ConversationId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


class UserRate:
    """At most ``per_minute`` messages per user in any 60 s (a sliding window)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, user: str) -> None:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(user, deque())
            while seen and seen[0] <= now - 60:
                seen.popleft()
            if len(seen) >= self.per_minute:
                wait = int(seen[0] + 60 - now) + 1
                raise RateLimitedError(
                    f"more than {self.per_minute} assistant messages in a minute: try again in {wait} s",
                    code="rate_limited",
                    headers={"Retry-After": str(wait)},
                )
            seen.append(now)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[0-9a-f]+$", description="continue this conversation"
    )
    message: str = Field(min_length=1, max_length=20_000, description="the question, or yes/no to a proposal")


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=20_000)


def _assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.assistant
    return assistant


def _checked(request: Request, text: str) -> Principal:
    """The caller, within their rate, with a message the assistant takes."""
    who: Principal = request.state.principal
    limit = request.app.state.platform.settings.assistant_max_chars
    if not text.strip():
        raise ValidationError("the message is empty: ask a question", code="empty_message")
    if _CONTROL.search(text):
        raise ValidationError(
            "the message holds control characters (other than tab and newline): send plain text",
            code="invalid_message",
        )
    if len(text) > limit:
        raise ValidationError(
            f"the message has {len(text)} characters; the assistant takes at most {limit} "
            "(setting assistant_max_chars)",
            code="message_too_long",
        )
    request.app.state.assistant_rate.check(who.name)
    return who


@router.post("/chat", summary="Talk to the maintenance assistant; answers cite sources, actions need a yes")
async def chat(request: Request, body: ChatRequest) -> dict[str, Any]:
    """Without ``conversation_id`` a new conversation starts; follow-ups ("it", "the second one")
    resolve against the conversation. An action (acknowledge, start or close a work order, record
    an inspection) is proposed first and done only after "yes" in the next message, as you."""
    who = _checked(request, body.message)
    reply = await run_in_threadpool(
        _assistant(request).chat,
        body.message,
        user=who.name,
        role=who.role,
        conversation_id=body.conversation_id,
    )
    return reply.to_dict()


@router.get("/conversations", summary="Your conversations with the assistant, the latest first")
def conversations(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    who: Principal = request.state.principal
    found = _assistant(request).conversations.list(who.name, limit)
    return {"conversations": found, "count": len(found)}


@router.get("/conversations/{conversation_id}", summary="One of your conversations, with its messages")
def conversation(request: Request, conversation_id: ConversationId) -> dict[str, Any]:
    who: Principal = request.state.principal
    return _assistant(request).conversations.get(who.name, conversation_id)


@router.delete(
    "/conversations/{conversation_id}", status_code=204, summary="Delete one of your conversations"
)
def delete_conversation(request: Request, conversation_id: ConversationId) -> Response:
    who: Principal = request.state.principal
    _assistant(request).conversations.delete(who.name, conversation_id)
    return Response(status_code=204)


@router.post("/ask", summary="Ask the maintenance assistant one question (not kept; no actions)")
async def ask(request: Request, body: AskRequest) -> dict[str, Any]:
    who = _checked(request, body.question)
    reply = await run_in_threadpool(_assistant(request).ask, body.question, user=who.name, role=who.role)
    answer = reply.to_dict()
    answer.pop("conversation_id")
    return answer
