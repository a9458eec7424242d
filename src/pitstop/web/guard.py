"""Authentication and authorization of every request, before the endpoint sees it.

A caller is resolved from ``Authorization: Bearer <key>`` (a user's API key, or the admin token,
which acts as an admin key for automation) or from the session cookie. Writes from a session must
carry its CSRF token (``X-CSRF-Token``) and, when the browser sends an ``Origin``, come from this
server's own origin. Resolved keys and sessions are trusted for ``auth_cache_s`` seconds; a key
revoked or a user disabled from another process stops working within that time (at once in this one).

The check runs in the route class (``GuardedRoute``), so it happens before the body is parsed: a
caller without the right gets 401/403, never a 422 that tells them about the body.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from pitstop.errors import AuthError, ConfigError, ForbiddenError
from pitstop.web.permissions import DEVICE, METRICS, PUBLIC, ROUTES, role_has
from pitstop.web.sessions import COOKIE, SessionCaller, Sessions
from pitstop.web.users import Principal, Users, digest

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# routes that check the CSRF token themselves (a form field, not a header)
_FORM_CSRF = frozenset({("POST", "/logout")})


class Guard:
    """Resolves callers and checks their rights against the permission table."""

    def __init__(
        self, users: Users, sessions: Sessions, admin_token: str, cache_s: float, metrics_public: bool
    ) -> None:
        self.users = users
        self.sessions = sessions
        self._admin_token = admin_token.encode()
        self._cache_s = cache_s
        self._metrics_public = metrics_public
        self._cache: dict[str, tuple[float, Principal | SessionCaller]] = {}

    def forget(self) -> None:
        """Drop every cached key and session (after a logout, a revocation, a disable)."""
        self._cache.clear()

    def authorize(self, request: Request, rule: str) -> Principal | None:
        """The caller allowed by ``rule``, set as ``request.state.principal``; raises 401/403."""
        if rule in (PUBLIC, DEVICE) or (rule == METRICS and self._metrics_public):
            return None
        permission = "fleet.read" if rule == METRICS else rule
        caller = self._caller(request)
        if caller is None:
            raise AuthError(
                "log in at /login, or send 'Authorization: Bearer <api key>' "
                "(`pitstop users api-key NAME` makes one)",
                code="not_authenticated",
            )
        principal = caller.principal if isinstance(caller, SessionCaller) else caller
        if not role_has(principal.role, permission):
            raise ForbiddenError(
                f"{principal.name} is a {principal.role}: this needs the {permission} permission",
                code="forbidden",
            )
        if isinstance(caller, SessionCaller) and request.method not in _SAFE:
            check_origin(request)
            route = (request.method, request.scope.get("route_path", ""))
            if route not in _FORM_CSRF:
                check_csrf(caller, request.headers.get("x-csrf-token"))
        request.state.principal = principal
        request.state.session = caller if isinstance(caller, SessionCaller) else None
        return principal

    def _caller(self, request: Request) -> Principal | SessionCaller | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise AuthError("send 'Authorization: Bearer <api key>'", code="not_authenticated")
            found = self.bearer(token)
            if found is None:
                raise AuthError("this API key is unknown or revoked", code="not_authenticated")
            return found
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        return self._cached("s" + digest(cookie), lambda: self.sessions.resolve(cookie))

    def bearer(self, token: str) -> Principal | SessionCaller | None:
        """Who a bearer token is (the admin token, or a user's API key), or None when nobody."""
        if hmac.compare_digest(token.encode(), self._admin_token):
            return Principal("admin-token", "admin", None, "token")
        return self._cached("k" + digest(token), lambda: self.users.resolve_key(token))

    def _cached(
        self, key: str, load: Callable[[], Principal | SessionCaller | None]
    ) -> Principal | SessionCaller | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = load()
        if found is not None and self._cache_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self._cache_s, found)
        else:
            self._cache.pop(key, None)
        return found


def check_csrf(caller: SessionCaller, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(sent.encode(), caller.csrf_token.encode()):
        raise ForbiddenError(
            "a write from a browser session needs its CSRF token in the X-CSRF-Token header "
            "(GET /api/v1/me gives it)",
            code="csrf_failed",
        )


def check_origin(request: Request) -> None:
    """Refuse a browser write sent from another site's page."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # not a URL at all (e.g. "http://[")
        netloc = None
    if netloc != host:
        raise ForbiddenError(f"a write from {origin} to {host} is refused (cross-site)", code="csrf_failed")


def rule_for(method: str, path: str) -> str:
    rule = ROUTES.get((method, path))
    if rule is None:
        raise ConfigError(
            f"route {method} {path} has no rule in pitstop.web.permissions.ROUTES: add one",
            code="route_without_rule",
        )
    return rule


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every API route, also those of included routers (FastAPI keeps an included router whole:
    our routers carry their full prefix, so a route's ``path_format`` is the path served)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


# routes outside the guard: the OpenAPI schema (it describes routes and holds no data) and the
# shipped static files (CSS, JS)
UNGUARDED = frozenset({"/openapi.json", "/static"})


def check_every_route(routes: list[Any]) -> None:
    """Refuse to build an app with a route the permission table does not name, or a route that
    does not pass the guard at all (other than ``UNGUARDED``)."""
    for route in routes:
        if isinstance(route, APIRoute) or hasattr(route, "original_router"):
            continue
        path = getattr(route, "path", "?")
        if path not in UNGUARDED:
            raise ConfigError(
                f"route {path} does not pass the guard: add it through a GuardedRoute router",
                code="route_without_rule",
            )
    for api_route in api_routes(routes):
        if not isinstance(api_route, GuardedRoute):
            raise ConfigError(
                f"route {api_route.path_format} is not a GuardedRoute", code="route_without_rule"
            )
        for method in api_route.methods or ():
            rule_for(method, api_route.path_format)


def _is_page(path: str) -> bool:
    return not path.startswith("/api/") and path not in ("/metrics", "/healthz", "/logout", "/login")


class GuardedRoute(APIRoute):
    """An ``APIRoute`` whose requests pass the guard first (pages redirect to the login instead of
    answering 401)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        return guarded(handler, self.path_format, self.methods or set())


def guarded(
    handler: Callable[[Request], Coroutine[Any, Any, Response]], path: str, methods: set[str]
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    rules = {m: ROUTES.get((m, path)) for m in methods}
    page = _is_page(path)

    async def route(request: Request) -> Response:
        rule = rules.get(request.method) or rule_for(request.method, path)
        guard: Guard = request.app.state.guard
        request.scope["route_path"] = path
        try:
            guard.authorize(request, rule)
        except AuthError:
            if not page:
                raise
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        except ForbiddenError as exc:
            if not page:
                raise
            return HTMLResponse(_forbidden_page(exc.message), status_code=403)
        return await handler(request)

    return route


def _forbidden_page(message: str) -> str:
    from html import escape

    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Pitstop — not allowed</title>'
        '<link rel="stylesheet" href="/static/style.css"></head><body><main>'
        f'<h1>Not allowed</h1><p>{escape(message)}</p><p><a href="/">Back to the fleet</a></p>'
        "</main></body></html>"
    )
