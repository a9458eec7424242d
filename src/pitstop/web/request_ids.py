"""A request id for every HTTP request: the client's ``X-Request-ID`` when it is a sane token,
else a new one. It is in the response's ``X-Request-ID`` header, in every error body and in every
log line written while the request is served (``pitstop.logs.request_id``)."""

from __future__ import annotations

import itertools
import os
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstop.logs import request_id

_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class _Ids:
    """Request ids: 16 hex digits, a random prefix per process and a counter (ids name requests
    in logs, they guard nothing; drawing 8 random bytes a request cost a few % of a predict)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = secrets.token_hex(4)
        self.counter = itertools.count(secrets.randbits(32))

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFF:08x}"


_IDS = _Ids()


def new_request_id() -> str:
    return _IDS.new()


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = given.decode() if given is not None and _SANE.fullmatch(given) else new_request_id()
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
        # reset only on the way out of a handled request: an unhandled error goes on to Starlette's
        # outermost error middleware, whose 500 (body, header, log line) still needs the id; each
        # request runs in a context of its own, so nothing leaks to the next one
        request_id.reset(token)
