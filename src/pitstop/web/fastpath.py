"""The usual prediction request, answered before the web framework sees it.

``POST /api/v1/predict`` with an API key (``Authorization: Bearer``), a declared length within
``max_body_bytes`` and a body of feature rows or of columns with data is most of what a model
server does. Through Starlette's middleware, routing and response classes such a request spends
about as long in the framework as in parsing and scoring. This ASGI layer, outermost, answers it
with the same calls the route makes (``Guard.bearer``, ``api_scores.score_rows``) and the same
response (status, JSON body, ``Content-Type``, ``X-Request-ID``). It sits outside FastAPI's own
layers too (``FastAPIWithFastPath``: its telemetry check, Starlette's error and body-limit
middleware), which cost a single-row request about a tenth of its server time.

Anything else goes to the app as it came, the body replayed: other routes, cookies (sessions
need their CSRF checks), unknown or revoked keys and missing rights (the guard's 401/403),
bodies that are not the usual form or do not score (their 422 and 400 come from the route), a
body without a declared length, and any exception before the answer (an ops DB that is down, a
bug): the app then meets it again and answers it. So every error still comes from the one place
that makes it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstop.platform import Platform
from pitstop.serving.matrix import ARROW_STREAM
from pitstop.web.api_scores import score_arrow, score_rows, usual_body
from pitstop.web.permissions import ROUTES, role_has
from pitstop.web.request_ids import _SANE, new_request_id
from pitstop.web.users import Principal

PATH = "/api/v1/predict"
_RULE = ROUTES[("POST", PATH)]
_ARROW = ARROW_STREAM.encode()


class PredictFastPath:
    def __init__(self, app: ASGIApp, platform: Platform, state: Any, max_body_bytes: int) -> None:
        self.app = app
        self.platform = platform
        self.state = state  # the app's state: its guard
        self.max_body_bytes = max_body_bytes
        self.answered = platform.metrics.rest_predict.labels("fast")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        token, length, rid, arrow = None, None, None, False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                token = rest.strip() if scheme.lower() == b"bearer" else b""
            elif name == b"content-length":
                length = int(value) if value.isdigit() and len(value) <= 18 else -1
            elif name == b"x-request-id":
                rid = value
            elif name == b"content-type":
                arrow = value.partition(b";")[0].strip().lower() == _ARROW
            elif name == b"content-encoding":
                length = -1  # the route decides what it makes of an encoded body
        if not token or length is None or not 0 <= length <= self.max_body_bytes:
            await self.app(scope, receive, send)
            return
        try:
            principal = self.state.guard.bearer(token.decode("latin-1"))
        except Exception:  # the ops DB down, say: the app answers, with its own error (503, 500)
            principal = None
        if not isinstance(principal, Principal) or not role_has(principal.role, _RULE):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody waits for an answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        answer = None
        try:  # a PitstopError or anything unexpected: the route answers it, with its error
            if arrow:  # (JSON, through the app's handlers and request ids)
                answer = score_arrow(self.platform, raw, _machine_type(scope["query_string"]))
            else:
                body = usual_body(raw)
                answer = score_rows(self.platform, body) if body is not None else None
        except Exception:
            answer = None
        if answer is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        self.answered.inc()
        rid = rid if rid is not None and _SANE.fullmatch(rid) else new_request_id().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                    (b"x-request-id", rid),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _machine_type(query: bytes) -> str | None:
    """The ``machine_type`` query parameter (the last, as Starlette's ``query_params.get``)."""
    if not query:
        return None
    found = parse_qs(query.decode("latin-1"), keep_blank_values=True).get("machine_type")
    return found[-1] if found else None


def _replay(raw: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body already read, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return replay


class FastAPIWithFastPath(FastAPI):
    """A FastAPI app whose ``fast_path`` (set once the app is built) sees ``POST /api/v1/predict``
    before FastAPI and Starlette do; everything else, and anything the fast path passes on, goes
    through the whole app as usual."""

    fast_path: PredictFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and scope["type"] == "http" and scope["path"] == PATH:
            scope["app"] = self
            await fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def install_fast_path(self, platform: Platform, max_body_bytes: int) -> None:
        """Answer the usual prediction requests before the framework; the rest reach the app."""
        self.fast_path = PredictFastPath(self._whole_app, platform, self.state, max_body_bytes)

    async def _whole_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
