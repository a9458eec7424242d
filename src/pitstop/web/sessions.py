"""Browser sessions, kept server-side in the ops DB.

The cookie holds 256 random bits; the table holds their SHA-256, the user, a CSRF token and when
the session began and was last used. A session ends after ``session_idle_s`` without a request,
``session_max_s`` after login, at logout, or when its user is disabled or gets a new password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from pitstop.store import Database, User, WebSession, utcnow
from pitstop.web.users import Principal, digest

COOKIE = "pitstop_session"
_TOUCH_EVERY = timedelta(seconds=30)  # last_seen is written at most this often per session


@dataclass(frozen=True)
class SessionCaller:
    principal: Principal
    csrf_token: str


class Sessions:
    def __init__(self, db: Database, idle_s: float, max_s: float) -> None:
        self.db = db
        self.idle = timedelta(seconds=idle_s)
        self.max = timedelta(seconds=max_s)

    def start(self, principal: Principal, address: str | None) -> tuple[str, str]:
        """A new session for ``principal``: the cookie value and its CSRF token."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = utcnow()
        assert principal.user_id is not None
        with self.db.session() as s:
            s.add(
                WebSession(
                    id_hash=digest(cookie),
                    user_id=principal.user_id,
                    csrf_token=csrf,
                    created_at=now,
                    last_seen=now,
                    address=(address or "")[:64] or None,
                )
            )
            # sessions past their absolute timeout are of no use to anyone: sweep them now and then
            s.execute(delete(WebSession).where(WebSession.created_at < now - self.max))
        return cookie, csrf

    def end(self, cookie: str) -> None:
        with self.db.session() as s:
            s.execute(delete(WebSession).where(WebSession.id_hash == digest(cookie)))

    def resolve(self, cookie: str) -> SessionCaller | None:
        """The live session behind ``cookie``, or None (unknown, timed out, or user disabled)."""
        now = utcnow()
        with self.db.session() as s:
            row = s.execute(
                select(WebSession, User)
                .join(User, User.id == WebSession.user_id)
                .where(WebSession.id_hash == digest(cookie))
            ).first()
            if row is None:
                return None
            session, user = row
            if user.disabled or now - session.last_seen > self.idle or now - session.created_at > self.max:
                s.delete(session)
                return None
            if now - session.last_seen > _TOUCH_EVERY:
                session.last_seen = now
            return SessionCaller(Principal(user.name, user.role, user.id, "session"), session.csrf_token)
