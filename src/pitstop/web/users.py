"""People and their credentials: users with a role, argon2id passwords, API keys, login links.

Secrets are only ever stored as hashes: passwords with argon2id (memory-hard, salted), API keys and
one-time login links with SHA-256 (they are 256 random bits, so a fast hash is enough). A secret is
returned once, by the call that makes it, and never logged.
"""

from __future__ import annotations

import builtins
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select, update

from pitstop.errors import ConflictError, NotFoundError, ValidationError
from pitstop.ingest.devices import hash_token
from pitstop.store import ApiKey, Database, LoginToken, User, WebSession, utcnow
from pitstop.web.permissions import ROLES

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# actors the system writes into the audit itself: no person may take these names
RESERVED = frozenset({"admin-token", "cli", "demo", "api", "processor", "retrain", "monitor", "batch"})
MIN_PASSWORD = 8
KEY_PREFIX = "psk_"
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))  # verified against when the user does not exist


# the stored form of a random token (API key, session id, login link): as for device tokens
digest = hash_token


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (by password session or API key) or the admin token."""

    name: str
    role: str
    user_id: int | None = None
    via: str = "session"  # session | key | token


class Users:
    """The users table and the credentials hanging off it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users -----------------------------------------------------------------------------
    def add(self, name: str, role: str, password: str | None = None) -> str:
        """Create a user; returns the password (generated when not given)."""
        _check_name(name)
        _check_role(role)
        password = _check_password(password) if password is not None else generate_password()
        now = utcnow()
        with self.db.session() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise ConflictError(f"user {name!r} exists: `pitstop users list`", code="user_exists")
            s.add(
                User(
                    name=name,
                    role=role,
                    password_hash=_hasher.hash(password),
                    disabled=False,
                    created_at=now,
                    updated_at=now,
                )
            )
        return password

    def list(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            keys = dict(
                s.execute(
                    select(ApiKey.user_id, func.count())
                    .where(ApiKey.revoked_at.is_(None))
                    .group_by(ApiKey.user_id)
                ).all()
            )
            return [
                {
                    "name": u.name,
                    "role": u.role,
                    "disabled": u.disabled,
                    "api_keys": int(keys.get(u.id, 0)),
                    "created_at": u.created_at.isoformat(),
                }
                for u in s.scalars(select(User).order_by(User.name))
            ]

    def count(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(User)) or 0)

    def set_role(self, name: str, role: str) -> None:
        _check_role(role)
        with self.db.session() as s:
            user = _get(s, name)
            if user.role == "admin" and role != "admin":
                _keep_an_admin(s, user)
            user.role, user.updated_at = role, utcnow()

    def disable(self, name: str) -> None:
        """Disable a user: their sessions end, their API keys and login links are revoked (enabling
        them again brings none of these back)."""
        with self.db.session() as s:
            user = _get(s, name)
            if user.role == "admin":
                _keep_an_admin(s, user)
            now = utcnow()
            user.disabled, user.updated_at = True, now
            _end_credentials(s, user.id, now)
            s.execute(
                update(ApiKey)
                .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=now)
            )

    def enable(self, name: str) -> None:
        with self.db.session() as s:
            user = _get(s, name)
            user.disabled, user.updated_at = False, utcnow()

    def reset_password(self, name: str, password: str | None = None) -> str:
        """Set a new password (generated when not given); the user's sessions end."""
        password = _check_password(password) if password is not None else generate_password()
        with self.db.session() as s:
            user = _get(s, name)
            user.password_hash, user.updated_at = _hasher.hash(password), utcnow()
            _end_credentials(s, user.id, utcnow())
        return password

    def authenticate(self, name: str, password: str) -> Principal | None:
        """The user, when the name and password match an enabled user. Unknown names cost the same
        time as wrong passwords, so timing does not tell which names exist."""
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.name == name)) if valid_name(name) else None
            stored = user.password_hash if user is not None else _DUMMY
            try:
                _hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return None
            if user is None or user.disabled:
                return None
            if _hasher.check_needs_rehash(stored):
                user.password_hash = _hasher.hash(password)
            return Principal(user.name, user.role, user.id, "session")

    # -- API keys --------------------------------------------------------------------------
    def create_key(self, name: str) -> str:
        """A new API key for ``name``; returned once, stored hashed."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            user = _get(s, name)
            s.add(ApiKey(user_id=user.id, prefix=key[:12], key_hash=digest(key), created_at=utcnow()))
        return key

    def keys(self, name: str) -> builtins.list[dict[str, Any]]:
        with self.db.session() as s:
            user = _get(s, name)
            rows = s.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id))
            return [
                {
                    "id": k.id,
                    "prefix": k.prefix,
                    "created_at": k.created_at.isoformat(),
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in rows
            ]

    def revoke_key(self, name: str, key_id: int | None = None) -> int:
        """Revoke one of ``name``'s keys (by id), or all of them; returns how many."""
        with self.db.session() as s:
            user = _get(s, name)
            query = update(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
            if key_id is not None:
                query = query.where(ApiKey.id == key_id)
            done = s.execute(query.values(revoked_at=utcnow())).rowcount  # type: ignore[attr-defined]
        if key_id is not None and not done:
            raise NotFoundError(f"{name} has no active key {key_id}", code="api_key_not_found")
        return int(done)

    def resolve_key(self, key: str) -> Principal | None:
        with self.db.session() as s:
            row = s.execute(
                select(User.id, User.name, User.role)
                .join(ApiKey, ApiKey.user_id == User.id)
                .where(ApiKey.key_hash == digest(key), ApiKey.revoked_at.is_(None), User.disabled.is_(False))
            ).first()
        return Principal(row.name, row.role, row.id, "key") if row is not None else None

    # -- one-time login links -----------------------------------------------------------------
    def login_link_token(self, name: str, valid_for: timedelta = timedelta(hours=24)) -> str:
        token = secrets.token_urlsafe(32)
        with self.db.session() as s:
            user = _get(s, name)
            s.add(LoginToken(token_hash=digest(token), user_id=user.id, expires_at=utcnow() + valid_for))
        return token

    def redeem_login_token(self, token: str) -> Principal | None:
        """The user the link was made for, once: the link is spent by this call (one conditional
        update, so of two calls racing for it only one wins)."""
        now = utcnow()
        key = digest(token)
        with self.db.session() as s:
            spent = s.execute(
                update(LoginToken)
                .where(
                    LoginToken.token_hash == key, LoginToken.used_at.is_(None), LoginToken.expires_at >= now
                )
                .values(used_at=now)
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                return None
            link = s.get(LoginToken, key)
            assert link is not None
            user = s.get(User, link.user_id)
            if user is None or user.disabled:
                return None
            return Principal(user.name, user.role, user.id, "session")


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def _end_credentials(s: Any, user_id: int, now: Any) -> None:
    """End a user's browser sessions and spend their unused login links."""
    s.query(WebSession).filter(WebSession.user_id == user_id).delete()
    s.execute(
        update(LoginToken)
        .where(LoginToken.user_id == user_id, LoginToken.used_at.is_(None))
        .values(used_at=now)
    )


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _get(s: Any, name: str) -> User:
    user: User | None = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"no user {name!r}: `pitstop users list` shows them", code="user_not_found")
    return user


def _keep_an_admin(s: Any, user: User) -> None:
    others = s.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == "admin", User.disabled.is_(False), User.id != user.id)
    )
    if not others:
        raise ConflictError(
            f"{user.name} is the last enabled admin: make another admin first", code="last_admin"
        )


def _check_name(name: str) -> None:
    if name in RESERVED:
        raise ValidationError(
            f"{name!r} is a name the system uses in the audit; choose another", code="invalid_user_name"
        )
    if not valid_name(name):
        raise ValidationError(
            f"invalid user name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit",
            code="invalid_user_name",
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r}: one of {', '.join(ROLES)}", code="invalid_role")


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(
            f"the password is too short: at least {MIN_PASSWORD} characters", code="weak_password"
        )
    if len(password) > 1024:
        raise ValidationError("the password is longer than 1024 characters", code="weak_password")
    return password
