"""Who am I, platform status, data (lake versions, quarantine), monitoring, audit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select

from pitstop import __version__
from pitstop.errors import NotFoundError
from pitstop.lake import TABLES, list_quarantine, release
from pitstop.maintenance import OPEN_STATES
from pitstop.monitoring.performance import recent_failures
from pitstop.platform import Platform
from pitstop.store import MachineState, WorkOrder
from pitstop.web.permissions import permissions_of
from pitstop.web.routing import OrjsonRoute
from pitstop.web.users import Principal

router = APIRouter(prefix="/api/v1", route_class=OrjsonRoute)


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@router.get("/me", tags=["users"], summary="Who is calling: user, role, permissions, CSRF token")
def me(request: Request) -> dict[str, Any]:
    who: Principal = request.state.principal
    session = request.state.session
    return {
        "user": who.name,
        "role": who.role,
        "via": who.via,
        "permissions": permissions_of(who.role),
        "csrf_token": session.csrf_token if session is not None else None,
    }


@router.get("/status", tags=["fleet"], summary="Platform status: intake, bus, lake, replay, serving model")
def status(request: Request) -> dict[str, Any]:
    platform = _platform(request)
    processor = request.app.state.processor
    replay = request.app.state.replay
    accepted = platform.metrics.registry.get_sample_value("pitstop_readings_accepted_total") or 0
    with platform.db.session() as s:
        open_orders = s.scalar(
            select(func.count()).select_from(WorkOrder).where(WorkOrder.status.in_(OPEN_STATES))
        )
        processed = s.scalar(select(func.sum(MachineState.readings)))
    models = {
        name: {"name": d.champion.model.name, "version": d.champion.model.version}
        if d.champion.loaded
        else None
        for name, d in platform.deployments.items()
    }
    return {
        "version": __version__,
        "readings_accepted": int(accepted),
        "readings_processed": int(processed or 0),
        "bus": {"head": platform.bus.head(), "lag": processor.lag() if processor else None},
        "lake": {"telemetry_version": platform.lake.version("telemetry")},
        "work_orders_open": int(open_orders or 0),
        "model": models[platform.default_type],
        "models": models,
        "replay": replay.stats.to_dict() if replay else None,
    }


@router.get("/lake", tags=["data"], summary="Lake tables: current version and recent commits")
def lake(request: Request, history: Annotated[int, Query(ge=0, le=100)] = 10) -> dict[str, Any]:
    platform = _platform(request)
    tables = {}
    for name in TABLES:
        commits = platform.lake.history(name, limit=history) if history else []
        tables[name] = {"version": platform.lake.version(name), "history": commits}
    return {"tables": tables}


@router.get("/quarantine", tags=["data"], summary="Readings held out of the lake, newest first, with why")
def quarantine(
    request: Request,
    machine_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> dict[str, Any]:
    frame = list_quarantine(_platform(request).lake, machine_id, limit)
    readings = [
        {"machine_id": m, "ts": ts.isoformat() if ts is not None else None, "seq": seq, "reason": reason}
        for m, ts, seq, reason in frame.select("machine_id", "ts", "seq", "reason").iter_rows()
    ]
    return {"readings": readings, "count": len(readings)}


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machine_id: str | None = Field(None, min_length=1, max_length=64)
    seqs: list[int] | None = Field(None, max_length=100_000, description="only these seqs (with machine_id)")
    all: bool = Field(False, description="release every quarantined reading")

    @model_validator(mode="after")
    def _one_target(self) -> ReleaseRequest:
        if not self.machine_id and not self.all:
            raise ValueError("name machine_id (optionally with seqs), or send all: true")
        if self.seqs and not self.machine_id:
            raise ValueError("seqs needs machine_id")
        return self


@router.post("/quarantine/release", tags=["data"], summary="Move confirmed readings into telemetry")
async def release_quarantine(request: Request, body: ReleaseRequest) -> dict[str, Any]:
    platform = _platform(request)
    who: Principal = request.state.principal
    machine = None if body.all else body.machine_id
    n = await run_in_threadpool(release, platform.lake, machine, body.seqs or None)
    platform.db.audit(
        who.name, "quarantine_released", role=who.role, machine_id=machine, seqs=body.seqs or [], readings=n
    )
    return {"released": n}


@router.get("/audit", tags=["ops"], summary="The audit log, newest first")
def audit_log(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: str | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Promotions, rollbacks, the retraining loop's steps, drift alerts, work-order moves, each with
    who did it (``actor``, and ``role`` for people)."""
    entries = _platform(request).db.audit_entries(limit=limit, action=action or None, actor=actor or None)
    return {"entries": entries, "count": len(entries)}


@router.get("/monitoring/performance", tags=["ops"], summary="Live model performance at recent failures")
def performance(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Per failure: RUL error by readings left, interval coverage, and whether (and with what
    lead) a work order opened in time."""
    reports = recent_failures(_platform(request).db, limit)
    caught = sum(r.get("caught_in_time", False) for r in reports)
    return {"failures": reports, "count": len(reports), "caught_in_time": caught}


@router.get("/monitoring/drift", tags=["ops"], summary="The latest live drift check per scope")
def drift(request: Request) -> dict[str, Any]:
    processor = request.app.state.processor
    if processor is None:
        raise NotFoundError(
            "no processor runs in this server: drift is checked by the processor", code="no_processor"
        )
    return {
        "window": processor.drift.window,
        "scopes": {k: r.to_dict() for k, r in processor.drift.latest.items()},
    }
