"""Route classes whose JSON bodies are parsed by orjson (and which pass the guard first).

FastAPI parses request bodies with the standard library's ``json``, which takes about 12 ms for a
100-row prediction request (18,000 numbers) where orjson takes under 2. Bodies orjson refuses
(``NaN`` or ``Infinity`` literals) go to ``json`` as before, so they still reach validation and get
the same clear 422.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from pitstop.web.guard import GuardedRoute, guarded

M = TypeVar("M", bound=BaseModel)


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                try:
                    self._json = json.loads(body)  # NaN/Infinity, or a decode error FastAPI reports
                except RecursionError:  # nested past Python's stack: a decode error like any other
                    raise json.JSONDecodeError("nested too deep", "", 0) from None
        return self._json


class OrjsonRoute(GuardedRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()  # guarded

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


class RequestRoute(GuardedRoute):
    """A route whose endpoint takes the ``Request`` alone and is called directly.

    FastAPI spends about 100–150 µs per request solving dependencies and validating the body,
    about as long as scoring one row. On the prediction route that overhead is the server's
    throughput, so the endpoint parses its own body with ``parse_body``. The body model is still
    documented, through ``openapi_extra``, and errors still reach the app's handlers.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def route(request: Request) -> Response:
            response: Response = await endpoint(request)
            return response

        return guarded(route, self.path_format, self.methods or set())


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a ``RequestRoute``'s JSON body as ``model``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def parse_body(request: Request, model: type[M]) -> M:
    """The JSON body as ``model`` (orjson, then ``json`` for NaN/Infinity). A body that is not JSON
    or does not fit the model raises the ``RequestValidationError`` FastAPI would have raised."""
    return validate_body(loads_body(await request.body()), model)


def loads_body(body: bytes) -> Any:
    """A JSON body (orjson, then ``json`` for NaN/Infinity); one that is not JSON raises the
    ``RequestValidationError`` FastAPI would have raised."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {exc}", "input": {}}]
            ) from None


def validate_body(data: Any, model: type[M]) -> M:
    """Parsed JSON as ``model``, or the ``RequestValidationError`` FastAPI would have raised."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
