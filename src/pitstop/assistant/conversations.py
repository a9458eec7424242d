"""Conversations kept per user in the ops DB: their turns, and the context follow-ups resolve
against (the machine and work order in focus, the last list shown, an action awaiting a yes/no)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from pitstop.errors import NotFoundError
from pitstop.store import Conversation, ConversationTurn, Database, utcnow

_TITLE = 80


def _not_found(conversation_id: str) -> NotFoundError:
    return NotFoundError(
        f"no conversation {conversation_id[:64]!r} of yours; GET /api/v1/assistant/conversations lists them "
        "(or leave conversation_id out to start one)",
        code="conversation_not_found",
    )


class Conversations:
    """Each user sees, continues and deletes only their own conversations."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def context(self, user: str, conversation_id: str | None) -> tuple[str, dict[str, Any], str | None]:
        """The conversation's id, its context, and the context as stored (None for a new id, not
        stored yet: the first turn stores it)."""
        if conversation_id is None:
            return secrets.token_hex(16), {}, None
        with self.db.session() as s:
            row = s.get(Conversation, conversation_id)
            if row is None or row.user_name != user:
                raise _not_found(conversation_id)
            return row.id, json.loads(row.context or "{}"), row.context

    def claim(self, user: str, conversation_id: str, stored: str | None, context: dict[str, Any]) -> bool:
        """Replace the stored context by ``context`` only if it is still ``stored``: of two turns
        that answer the same proposal at once, one wins (a compare-and-set, on any database)."""
        if stored is None:
            return True
        with self.db.session() as s:
            moved = s.execute(
                update(Conversation)
                .where(
                    Conversation.id == conversation_id,
                    Conversation.user_name == user,
                    Conversation.context == stored,
                )
                .values(context=json.dumps(context, default=str))
            )
            return bool(getattr(moved, "rowcount", 0) == 1)

    def record(
        self,
        user: str,
        conversation_id: str,
        question: str,
        reply: dict[str, Any],
        context: dict[str, Any],
        new: bool = True,
    ) -> None:
        """Keep the user's turn, the answer and the new context, in one transaction. A
        conversation deleted while its turn was answered stays deleted (404)."""
        try:
            self._record(user, conversation_id, question, reply, context, new)
        except (StaleDataError, IntegrityError) as exc:  # deleted or written meanwhile
            raise _not_found(conversation_id) from exc

    def _record(
        self,
        user: str,
        conversation_id: str,
        question: str,
        reply: dict[str, Any],
        context: dict[str, Any],
        new: bool,
    ) -> None:
        now = utcnow()
        with self.db.session() as s:
            row = s.get(Conversation, conversation_id)
            if row is None and not new:
                raise _not_found(conversation_id)
            if row is None:
                title = " ".join(question.split())
                row = Conversation(
                    id=conversation_id,
                    user_name=user,
                    title=title[:_TITLE] + ("…" if len(title) > _TITLE else ""),
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
            elif row.user_name != user:
                raise _not_found(conversation_id)
            row.context = json.dumps(context, default=str)
            row.updated_at = now
            s.add(ConversationTurn(conversation_id=conversation_id, ts=now, speaker="user", text=question))
            s.add(
                ConversationTurn(
                    conversation_id=conversation_id,
                    ts=now,
                    speaker="assistant",
                    text=reply["answer"],
                    sources=json.dumps(reply["sources"], default=str),
                    actions=json.dumps(reply["actions"], default=str),
                )
            )

    def list(self, user: str, limit: int = 50) -> list[dict[str, Any]]:
        """The user's conversations, the latest first."""
        with self.db.session() as s:
            turns = (
                select(ConversationTurn.conversation_id, func.count().label("turns"))
                .group_by(ConversationTurn.conversation_id)
                .subquery()
            )
            rows = s.execute(
                select(Conversation, turns.c.turns)
                .outerjoin(turns, turns.c.conversation_id == Conversation.id)
                .where(Conversation.user_name == user)
                .order_by(Conversation.updated_at.desc(), Conversation.id)
                .limit(limit)
            ).all()
            return [
                {
                    "conversation_id": c.id,
                    "title": c.title,
                    "created_at": c.created_at.isoformat(),
                    "updated_at": c.updated_at.isoformat(),
                    "messages": n or 0,
                }
                for c, n in rows
            ]

    def get(self, user: str, conversation_id: str) -> dict[str, Any]:
        """One conversation with its messages, oldest first."""
        with self.db.session() as s:
            row = s.get(Conversation, conversation_id)
            if row is None or row.user_name != user:
                raise _not_found(conversation_id)
            turns = s.scalars(
                select(ConversationTurn)
                .where(ConversationTurn.conversation_id == conversation_id)
                .order_by(ConversationTurn.id)
            ).all()
            return {
                "conversation_id": row.id,
                "title": row.title,
                "created_at": row.created_at.isoformat(),
                "updated_at": row.updated_at.isoformat(),
                "messages": [
                    {
                        "role": t.speaker,
                        "text": t.text,
                        "ts": t.ts.isoformat(),
                        "sources": json.loads(t.sources or "[]"),
                        "actions": json.loads(t.actions or "[]"),
                    }
                    for t in turns
                ],
            }

    def delete(self, user: str, conversation_id: str) -> None:
        with self.db.session() as s:
            row = s.get(Conversation, conversation_id)
            if row is None or row.user_name != user:
                raise _not_found(conversation_id)
            s.execute(delete(ConversationTurn).where(ConversationTurn.conversation_id == conversation_id))
            s.delete(row)
