"""The request limits every route shares, applied before a route sees the request.

- A body larger than ``max_body_bytes`` is a 413 before it is read: a declared ``Content-Length``
  over the cap is refused at once, and a body sent without one (chunked) is counted as it
  arrives and refused the moment it passes the cap. Intake keeps its own, equal check.
- A ``Content-Length`` that is not a number is a 400.
- A path or query string longer than ``MAX_TARGET`` is a 414.

Pure ASGI, so it costs one header lookup per request and never buffers a body.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstop.web.errors import error_response

MAX_TARGET = 8192  # bytes of path + query string


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > MAX_TARGET:
            await _refuse(scope, receive, send, 414, "uri_too_long", f"the URL is over {MAX_TARGET} bytes")
            return
        declared = _content_length(scope)
        if declared == -1:
            await _refuse(scope, receive, send, 400, "bad_request", "Content-Length is not a number")
            return
        limit = self.max_body_bytes
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, 413, "payload_too_large", _too_large(limit))
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length, None when there is none, -1 when it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) < 20 else -1
    return None


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes (max_body_bytes): send less per request"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    response: Any = error_response(status, code, message, headers={"Connection": "close"})
    await response(scope, receive, send)
