from __future__ import annotations

import gzip
import io
import zlib
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pitstop.errors import AuthError, PayloadTooLargeError, PitstopError, ValidationError
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
        "415": {"description": "not JSON or NDJSON, or a Content-Encoding other than zstd, gzip"},
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
        limit = intake.p.settings.max_body_bytes
        body = await _read_capped(request, limit)
        encoding = request.headers.get("content-encoding", "")
        result = await run_in_threadpool(_handle, intake, token, body, content_type, encoding)
    except PitstopError as exc:
        if exc.status < 500:
            intake.p.metrics.readings_rejected.labels(exc.code).inc()
        raise
    return JSONResponse(result.to_dict(), status_code=202)


class UnsupportedEncoding(PitstopError):
    code = "unsupported_encoding"
    status = 415


def _decode(encoding: str, body: bytes, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (zstd, gzip or none), at most ``limit`` bytes
    once decompressed (a 413 past it, so a small bomb cannot fill memory)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("zstd", "gzip"):
        raise UnsupportedEncoding(
            f"content encoding {encoding[:40]!r} is not supported: send zstd, gzip or none"
        )
    try:
        if encoding == "zstd":
            try:
                import zstandard
            except ImportError as exc:
                raise UnsupportedEncoding("this server cannot read zstd (zstandard is missing)") from exc
            errors: tuple[type[Exception], ...] = (zstandard.ZstdError,)
            plain = _unzstd(zstandard.ZstdDecompressor(), body, limit)
        else:
            errors = (OSError, EOFError, zlib.error)
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as reader:
                plain = reader.read(limit + 1)
    except UnsupportedEncoding:
        raise
    except errors as exc:
        raise ValidationError(
            f"the body is not valid {encoding}: {str(exc)[:200]}", code="invalid_encoding"
        ) from exc
    if len(plain) > limit:
        raise PayloadTooLargeError(
            f"the decompressed body exceeds the limit of {limit} bytes: split the batch"
        )
    return bytes(plain)


def _unzstd(dctx: Any, body: bytes, limit: int) -> bytes:
    """Every zstd frame of ``body`` (a client may write several), each to its end (a truncated
    frame is an error, not a shorter body), stopping past ``limit`` bytes of output: the input goes
    in 1 KiB at a time, so a bomb never expands far beyond the limit."""
    import zstandard

    out = bytearray()
    data = memoryview(body)
    while len(data):
        frame = dctx.decompressobj()
        pos = 0
        while not frame.eof:
            if pos >= len(data):
                raise zstandard.ZstdError("the body ends inside a zstd frame (truncated)")
            piece = bytes(data[pos : pos + 1024])
            pos += len(piece)
            out += frame.decompress(piece)
            if len(out) > limit:
                return bytes(out)
        data = memoryview(frame.unused_data + bytes(data[pos:]))
    return bytes(out)


@router.get(
    "/api/v1/agent/state",
    summary="The device's machine as the server knows it: the last seq accepted (device token)",
)
async def agent_state(request: Request) -> JSONResponse:
    """What an agent asks first: which seqs the server already holds for its machine (so a new
    buffer starts above them), and, in the ``Date`` header, the server's clock."""
    intake: Intake = request.app.state.intake
    token = _bearer(request)
    identity = await run_in_threadpool(intake.authenticate, token)
    last = await run_in_threadpool(intake.last_seq, identity.machine_id)
    machine_type = intake.p.fleet.type_of(identity.machine_type)
    return JSONResponse(
        {
            "machine_id": identity.machine_id,
            "machine_type": identity.machine_type,
            "sensors": machine_type.sensor_names,
            "last_seq": last,
            "server_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    )


def _handle(intake: Intake, token: str, body: bytes, content_type: str, encoding: str = "") -> IntakeResult:
    """Everything after the body arrives, in one worker thread: auth, limit, decompress (only for a
    known device), decode, validate, publish."""
    identity = intake.authenticate(token)
    intake.admit(identity)
    body = _decode(encoding, body, intake.p.settings.max_body_bytes)
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
