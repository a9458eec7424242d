"""Log in and out: the login form, one-time login links, the session cookie, the login throttle.

``POST /login`` takes the form fields ``username`` and ``password`` (or the same as JSON). A browser
form gets a 303 to ``next`` with the session cookie; a JSON caller gets the user, role and CSRF
token. Failures say only "invalid username or password", whatever was wrong, and cost the same
time. Failed attempts are counted per user name and per address over ``login_window_s``; past
``login_max_failures`` (10x that per address) logins answer 429 until the window has passed.
"""

from __future__ import annotations

import json
import time
from collections import deque
from importlib import resources
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from pitstop.errors import AuthError, RateLimitedError, ValidationError
from pitstop.web.guard import Guard, GuardedRoute, check_csrf, check_origin
from pitstop.web.sessions import COOKIE
from pitstop.web.users import Principal, valid_name

STATIC = resources.files("pitstop.web") / "static"

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)


class LoginThrottle:
    """Failed logins per user name and per address, over a sliding window.

    An attempt counts as a failure from the moment it starts (``attempt``) and is taken back when
    the password turns out right (``succeeded``), so a burst of parallel guesses, all waiting on
    the password hash at once, is limited like a sequence of them. Keys are bounded: a name that
    could not exist shares one bucket, so hostile names cannot grow the table's memory.
    """

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.limits = {"user": max_failures, "address": max_failures * 10}
        self.window = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def attempt(self, user: str, address: str) -> float:
        """Refuse (429) past the limits; else count this attempt as a failure until it succeeds.
        Returns the attempt's stamp for ``succeeded``."""
        now = time.monotonic()
        keys = self._keys(user, address)
        for kind, key in keys:
            seen = self._recent((kind, key), now)
            if len(seen) >= self.limits[kind]:
                wait = int(seen[0] + self.window - now) + 1
                raise RateLimitedError(
                    f"too many failed logins: try again in {wait} s",
                    code="rate_limited",
                    headers={"Retry-After": str(wait)},
                )
        if len(self._failures) > 100_000:  # a flood of addresses: forget the oldest state
            self._failures.clear()
        for counted in keys:
            self._failures.setdefault(counted, deque()).append(now)
        return now

    def succeeded(self, user: str, address: str, stamp: float) -> None:
        """The attempt stamped ``stamp`` was right: it is not a failure; the name starts afresh."""
        user_key, address_key = self._keys(user, address)
        self._failures.pop(user_key, None)
        seen = self._failures.get(address_key)
        if seen is not None and stamp in seen:
            seen.remove(stamp)

    @staticmethod
    def _keys(user: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        name = user.lower() if valid_name(user) else "\x00invalid"
        return ("user", name), ("address", address[:64])

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        seen = self._failures.get(key, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        return seen


def _guard(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _next(target: str | None) -> str:
    """Only a path on this server (no scheme, no host, no ``//``): never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _wants_json(request: Request) -> bool:
    return "json" in request.headers.get("content-type", "")


@router.get("/login")
async def login_page(request: Request, token: str | None = None, next: str | None = None) -> Response:
    """The login form; with ``?token=`` a one-time login link (``pitstop demo`` prints one)."""
    if token:
        principal = await run_in_threadpool(_guard(request).users.redeem_login_token, token)
        if principal is None:
            return RedirectResponse("/login?error=expired_link", status_code=303)
        return await _start_session(request, principal, _next(next), as_json=False)
    return FileResponse(str(STATIC / "login.html"), headers={"Cache-Control": "no-store"})


@router.post("/login")
async def login(request: Request) -> Response:
    check_origin(request)
    body = await request.body()
    as_json = _wants_json(request)
    try:
        if as_json:
            fields = json.loads(body or b"{}")
            if not isinstance(fields, dict):
                raise ValueError
        else:
            fields = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationError("send the form fields username and password", code="invalid_request") from None
    user, password = fields.get("username"), fields.get("password")
    target = _next(fields.get("next") if isinstance(fields.get("next"), str) else None)
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        raise ValidationError("send the form fields username and password", code="invalid_request")
    guard, throttle, address = _guard(request), request.app.state.login_throttle, _address(request)
    try:
        stamp = throttle.attempt(user, address)
    except RateLimitedError:
        if as_json:
            raise
        return RedirectResponse(f"/login?error=rate_limited&next={quote(target, safe='')}", status_code=303)
    principal = await run_in_threadpool(guard.users.authenticate, user[:256], password[:1024])
    if principal is None:
        if as_json:
            raise AuthError("invalid username or password", code="invalid_credentials")
        return RedirectResponse(f"/login?error=invalid&next={quote(target, safe='')}", status_code=303)
    throttle.succeeded(user, address, stamp)
    return await _start_session(request, principal, target, as_json=as_json)


async def _start_session(request: Request, principal: Principal, target: str, as_json: bool) -> Response:
    guard = _guard(request)
    earlier = request.cookies.get(COOKIE)
    if earlier:  # logging in again (maybe as someone else) ends the session this browser had
        await run_in_threadpool(guard.sessions.end, earlier)
        guard.forget()
    cookie, csrf = await run_in_threadpool(guard.sessions.start, principal, _address(request))
    response: Response
    if as_json:
        response = JSONResponse({"user": principal.name, "role": principal.role, "csrf_token": csrf})
    else:
        response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(guard.sessions.max.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (form field ``csrf_token`` or the ``X-CSRF-Token`` header)."""
    session = request.state.session
    if session is not None:
        sent = request.headers.get("x-csrf-token")
        if sent is None:
            form = parse_qs((await request.body()).decode(errors="replace"))
            sent = form.get("csrf_token", [""])[0] or None
        check_csrf(session, sent)
        cookie = request.cookies.get(COOKIE, "")
        await run_in_threadpool(_guard(request).sessions.end, cookie)
        _guard(request).forget()
    response: Response = (
        JSONResponse({"status": "logged_out"})
        if _wants_json(request) or request.headers.get("x-csrf-token")
        else RedirectResponse("/login", status_code=303)
    )
    response.delete_cookie(COOKIE, path="/")
    return response
