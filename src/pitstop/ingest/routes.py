from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pitstop.errors import AuthError, ForbiddenError, PayloadTooLargeError, ValidationError
from pitstop.ingest.devices import DeviceRegistry
from pitstop.schema import Reading, parse_readings
from pitstop.schema.wire import encode_batch

router = APIRouter(tags=["ingest"])

_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "array", "items": Reading.model_json_schema(), "minItems": 1},
                        {
                            "type": "object",
                            "properties": {
                                "readings": {"type": "array", "items": Reading.model_json_schema()}
                            },
                            "required": ["readings"],
                        },
                    ]
                }
            }
        },
    }
}


@router.post(
    "/api/v1/readings",
    status_code=202,
    openapi_extra=_BODY_SCHEMA,
    summary="Post a batch of readings (device token); 202 once durable in the bus",
)
async def post_readings(request: Request) -> JSONResponse:
    platform = request.app.state.platform
    metrics = platform.metrics
    try:
        identity = await run_in_threadpool(DeviceRegistry(platform.db).authenticate, _bearer(request))
        body = await _read_capped(request, platform.settings.max_body_bytes)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"body is not valid JSON: {exc}", code="invalid_json") from None
        readings = parse_readings(
            payload,
            platform.fleet.type_of(identity.machine_type),
            max_readings=platform.settings.max_batch_readings,
            max_future_skew_s=platform.settings.max_future_skew_s,
        )
        foreign = sorted({r.machine_id for r in readings} - {identity.machine_id})
        if foreign:
            raise ForbiddenError(
                f"this device may only post readings for machine {identity.machine_id!r}, "
                f"not {', '.join(foreign)}",
                code="wrong_machine",
            )
    except (AuthError, ForbiddenError, ValidationError, PayloadTooLargeError) as exc:
        metrics.readings_rejected.labels(exc.code).inc()
        raise
    position = await run_in_threadpool(platform.bus.publish, encode_batch(readings))
    metrics.readings_accepted.inc(len(readings))
    return JSONResponse({"accepted": len(readings), "position": position}, status_code=202)


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
