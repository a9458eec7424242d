from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pitstop.errors import AuthError, PayloadTooLargeError, PitstopError
from pitstop.ingest.intake import Intake, IntakeResult
from pitstop.schema import Reading
from pitstop.web.guard import GuardedRoute

router = APIRouter(tags=["ingest"], route_class=GuardedRoute)  # a device token, checked by the intake

_READING = Reading.model_json_schema()
_ARRAY = {"type": "array", "items": _READING, "minItems": 1}
_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _ARRAY,
                        {
                            "type": "object",
                            "properties": {"readings": _ARRAY},
                            "required": ["readings"],
                            "additionalProperties": False,
                        },
                    ]
                }
            },
            "application/x-ndjson": {"schema": {"type": "string", "description": "one reading per line"}},
        },
    },
    "responses": {
        "202": {"description": "stored durably in the bus (or acknowledged as a re-send)"},
        "401": {"description": "missing or unknown device token"},
        "403": {"description": "a reading for another machine than the device's"},
        "413": {"description": "body larger than max_body_bytes"},
        "415": {"description": "not JSON or NDJSON"},
        "422": {"description": "invalid readings; details lists each with its code"},
        "429": {"description": "device over its rate limit; see Retry-After"},
    },
}


class UnsupportedMediaType(PitstopError):
    code = "unsupported_media_type"
    status = 415


# matched exactly (parameters such as charset aside): "text/notjson" is not JSON
MEDIA_TYPES = ("application/json", "application/x-ndjson", "application/ndjson", "application/jsonlines")


def _media_type(header: str) -> str:
    media = header.split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"content type {header[:100]!r} is not supported: send {' or '.join(MEDIA_TYPES)}"
        )
    return media


@router.post(
    "/api/v1/readings",
    status_code=202,
    openapi_extra=_BODY_SCHEMA,
    summary="Post a batch of readings with a device token; 202 once durable in the bus",
)
async def post_readings(request: Request) -> JSONResponse:
    intake: Intake = request.app.state.intake
    try:
        token = _bearer(request)
        content_type = _media_type(request.headers.get("content-type", "application/json"))
        body = await _read_capped(request, intake.p.settings.max_body_bytes)
        result = await run_in_threadpool(_handle, intake, token, body, content_type)
    except PitstopError as exc:
        if exc.status < 500:
            intake.p.metrics.readings_rejected.labels(exc.code).inc()
        raise
    return JSONResponse(result.to_dict(), status_code=202)


def _handle(intake: Intake, token: str, body: bytes, content_type: str) -> IntakeResult:
    """Everything after the body arrives, in one worker thread: auth, limit, decode, validate, publish."""
    identity = intake.authenticate(token)
    intake.admit(identity)
    return intake.submit_body(identity, body, content_type)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send the device token as 'Authorization: Bearer <token>'", code="missing_token")
    return token.strip()


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes exceeds the limit of {limit}: split the batch")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes: split the batch")
        chunks.append(chunk)
    return b"".join(chunks)
