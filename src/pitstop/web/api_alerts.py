"""Alerts: list them (viewer and up), silence and unsilence them (engineer and up, audited)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pitstop.monitoring.alert_rules import Kind
from pitstop.monitoring.alerts import add_silence, list_alerts, list_silences, remove_silence
from pitstop.platform import Platform
from pitstop.web.routing import OrjsonRoute
from pitstop.web.users import Principal

router = APIRouter(prefix="/api/v1", tags=["alerts"], route_class=OrjsonRoute)


SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="silence id from GET /api/v1/alerts")]


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@router.get("/alerts", summary="Alerts, newest first: firing by default; silenced ones are marked")
def alerts(
    request: Request,
    status: Literal["firing", "resolved", "all"] = "firing",
    kind: Kind | None = None,
    machine_type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    db = _platform(request).db
    found = list_alerts(db, None if status == "all" else status, kind, machine_type or None, limit)
    return {"alerts": found, "count": len(found), "silences": list_silences(db)}


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind | None = None
    machine_type: str | None = Field(None, min_length=1, max_length=64)
    key_prefix: str | None = Field(None, min_length=1, max_length=255)
    duration_s: float = Field(gt=0, le=366 * 24 * 3600, description="how long, in seconds")
    reason: str = Field(min_length=1, max_length=2000)


@router.post("/alerts/silences", summary="Stop sending matching alerts for a while (still recorded)")
async def silence(request: Request, body: SilenceRequest) -> dict[str, Any]:
    who: Principal = request.state.principal
    return await run_in_threadpool(
        lambda: add_silence(
            _platform(request).db,
            who.name,
            duration_s=body.duration_s,
            reason=body.reason,
            kind=body.kind,
            machine_type=body.machine_type,
            key_prefix=body.key_prefix,
            role=who.role,
        )
    )


@router.delete("/alerts/silences/{silence_id}", summary="End a silence now")
async def unsilence(request: Request, silence_id: SilenceId) -> dict[str, Any]:
    who: Principal = request.state.principal
    db = _platform(request).db
    return await run_in_threadpool(remove_silence, db, who.name, silence_id, who.role)
