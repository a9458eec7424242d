"""Admin API for devices: the same operations as ``pitstop devices``."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from pitstop.errors import ConflictError, NotFoundError, ValidationError
from pitstop.ingest.intake import Intake
from pitstop.web.guard import GuardedRoute

if TYPE_CHECKING:
    from pitstop.platform import Platform

log = logging.getLogger(__name__)


# who may call each route: pitstop.web.permissions (devices: admin; events: engineer)
router = APIRouter(prefix="/api/v1/admin", tags=["admin"], route_class=GuardedRoute)


def _who(request: Request) -> tuple[str, str | None]:
    """The caller's name and role, for the audit."""
    who = request.state.principal
    return who.name, who.role


class NewDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machine_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    machine_type: str | None = Field(None, description="create the machine with this type if it is new")


DeviceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="device id from `devices list`")]


def _intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


@router.post("/devices", status_code=201, summary="Register a device; the token is shown once")
async def add_device(request: Request, body: NewDevice) -> dict[str, Any]:
    intake = _intake(request)
    device_id, token = await run_in_threadpool(
        intake.devices.add, body.machine_id, body.machine_type, intake.p.fleet
    )
    actor, role = _who(request)
    intake.p.db.audit(actor, "device_added", role=role, device_id=device_id, machine_id=body.machine_id)
    return {"device_id": device_id, "machine_id": body.machine_id, "token": token}


@router.get("/devices", summary="All devices")
async def list_devices(request: Request) -> dict[str, Any]:
    devices = await run_in_threadpool(_intake(request).devices.list)
    return {"devices": devices, "count": len(devices)}


@router.post("/devices/{device_id}/disable", summary="Disable a device; its token stops working")
async def disable_device(request: Request, device_id: DeviceId) -> dict[str, Any]:
    intake = _intake(request)
    await run_in_threadpool(intake.devices.disable, device_id)
    intake.forget_devices()
    actor, role = _who(request)
    intake.p.db.audit(actor, "device_disabled", role=role, device_id=device_id)
    return {"device_id": device_id, "status": "disabled"}


@router.post("/devices/{device_id}/rotate", summary="Issue a new token; the old one stops working")
async def rotate_device(request: Request, device_id: DeviceId) -> dict[str, Any]:
    intake = _intake(request)
    token = await run_in_threadpool(intake.devices.rotate, device_id)
    intake.forget_devices()
    actor, role = _who(request)
    intake.p.db.audit(actor, "device_rotated", role=role, device_id=device_id)
    return {"device_id": device_id, "token": token}


class NewEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machine_id: str = Field(min_length=1, max_length=64)
    kind: Literal["failure", "maintenance", "inspection"]
    ts: datetime | None = Field(None, description="when it happened (default: now); ISO 8601 with a zone")
    seq: int | None = Field(
        None, ge=0, le=2**63 - 1, description="the machine's reading it follows (default: its latest)"
    )
    detail: str | None = Field(None, max_length=4000)
    component: str | None = Field(
        None, max_length=128, description="the component that failed or was serviced (one of its type's)"
    )


@router.post(
    "/events",
    status_code=201,
    summary="Record a failure, maintenance or inspection event (stored once per idempotency key)",
)
async def add_event(
    request: Request,
    response: Response,
    body: NewEvent,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=128,
            pattern=r"^[\x21-\x7e]+$",
            description="the same key sent again returns the stored event (200) and stores nothing; "
            "without one the key is derived from the body and, without ts, the machine's latest seq",
        ),
    ] = None,
) -> dict[str, Any]:
    """Events are the ground truth: a ``failure`` labels the readings before it for training and
    scores the live predictions made before it; ``failure`` and ``maintenance`` reset the
    machine's baseline. The event and its audit row are one ops-DB transaction; the event reaches
    the lake through the lake outbox, at once when the lake takes it."""
    platform = _intake(request).p
    stored, fresh = await run_in_threadpool(record_event, platform, body, idempotency_key, *_who(request))
    if not fresh:
        response.status_code = 200
    return {**stored, "duplicate": not fresh}


def record_event(
    platform: Platform, body: NewEvent, key: str | None, actor: str, role: str | None
) -> tuple[dict[str, Any], bool]:
    """The stored event and whether this request stored it."""
    from pitstop.lake.outbox import enqueue, keyed
    from pitstop.store import Machine, MachineState, audit_entry, utcnow

    with platform.db.session() as s:
        machine = s.get(Machine, body.machine_id)
        if machine is None:
            raise NotFoundError(f"no machine {body.machine_id}", code="machine_not_found")
        state = s.get(MachineState, body.machine_id)
        last_seq = state.last_seq if state is not None else None
        machine_type = machine.machine_type
    known = platform.fleet.machine_types.get(machine_type)
    components = known.component_names if known is not None else []
    if body.component is not None and components and body.component not in components:
        raise ValidationError(
            f"{body.component!r} is not a component of machine type {machine_type}; "
            f"its components are {', '.join(components)}",
            code="unknown_component",
        )
    if body.ts is not None and body.ts.tzinfo is None:
        raise ValidationError("ts needs a timezone (e.g. 2026-11-22T10:00:00Z)", code="naive_timestamp")
    seq = body.seq if body.seq is not None else last_seq
    # a keyed request is the same request when its body is; a derived key also needs the seq an
    # event without one resolves to (the same body after the machine's next reading is a new event)
    request_hash = _event_hash(body, body.seq if key is not None else seq)
    outbox_key = f"event:{key}" if key is not None else f"event-body:{request_hash}"
    event: dict[str, Any] = {
        "machine_id": body.machine_id,
        "ts": body.ts or utcnow(),
        "seq": seq,
        "kind": body.kind,
        "detail": body.detail,
        "component": body.component,
    }
    try:
        with platform.db.session() as s:
            earlier = keyed(s, outbox_key)
            if earlier is None:
                # one unit: the event (through the outbox) and its audit row
                enqueue(s, "events", event, key=outbox_key, request_hash=request_hash)
                detail = {k: str(v) for k, v in event.items() if v is not None}
                s.add(audit_entry(actor, "event_recorded", role=role, idempotency_key=key, **detail))
    except IntegrityError:  # the same key committed by a concurrent request
        with platform.db.session() as s:
            earlier = keyed(s, outbox_key)
        if earlier is None:
            raise
    if earlier is not None:
        stored, stored_hash = earlier
        if stored_hash != request_hash:
            raise ConflictError(
                "this Idempotency-Key was used for a different event; use a new key for a new event",
                code="idempotency_key_reused",
            )
        return _event_json(stored), False
    try:
        platform.outbox.drain()
    except Exception as exc:  # committed: the processor's next drain appends it
        log.warning("admin event kept in the lake outbox for the next drain: %s", exc)
    return _event_json(event), True


def _event_hash(body: NewEvent, seq: int | None) -> str:
    """What makes two requests the same event: the body as sent, with the seq it resolves to (an
    event without ``ts`` repeated before the machine's next reading is the same event)."""
    fields = body.model_dump(mode="json")
    fields["seq"] = seq
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    ts = event["ts"]
    return {**event, "ts": ts.isoformat() if isinstance(ts, datetime) else ts}
