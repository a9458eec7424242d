"""Admin API for devices: the same operations as ``pitstop devices``."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pitstop.errors import AuthError, ForbiddenError
from pitstop.ingest.intake import Intake


def require_admin(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send the admin token as 'Authorization: Bearer <token>'", code="missing_token")
    expected: str = request.app.state.admin_token
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ForbiddenError("this token is not the admin token", code="not_admin")


router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


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
    intake.p.db.audit("admin", "device_added", device_id=device_id, machine_id=body.machine_id)
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
    intake.p.db.audit("admin", "device_disabled", device_id=device_id)
    return {"device_id": device_id, "status": "disabled"}


@router.post("/devices/{device_id}/rotate", summary="Issue a new token; the old one stops working")
async def rotate_device(request: Request, device_id: DeviceId) -> dict[str, Any]:
    intake = _intake(request)
    token = await run_in_threadpool(intake.devices.rotate, device_id)
    intake.forget_devices()
    intake.p.db.audit("admin", "device_rotated", device_id=device_id)
    return {"device_id": device_id, "token": token}
