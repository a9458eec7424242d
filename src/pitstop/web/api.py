from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
import polars as pl
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from pitstop.errors import NotFoundError, ValidationError
from pitstop.features import build_features
from pitstop.maintenance import FINDINGS, OPEN_STATES, transition, work_order_json
from pitstop.platform import Platform
from pitstop.store import Machine, MachineState, Prediction, WorkOrder
from pitstop.web.routing import OrjsonRoute, RequestRoute, body_schema, parse_body
from pitstop.web.users import Principal

router = APIRouter(prefix="/api/v1", tags=["fleet"], route_class=OrjsonRoute)


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _machine_json(
    platform: Platform,
    machine: Machine,
    state: MachineState | None,
    order: tuple[int, str] | None,
    trend: list[float] | None = None,
) -> dict[str, Any]:
    rul = state.predicted_rul if state else None
    policy = platform.policy_for(machine.machine_type)
    if machine.status == "retired":
        status = "retired"
    elif rul is None:
        status = "no_data"
    else:
        lower = state.rul_lower if state and state.rul_lower is not None else rul
        status = "at_risk" if policy.at_risk(lower) else "ok"
    return {
        "machine_id": machine.machine_id,
        "machine_type": machine.machine_type,
        "lifecycle": machine.status,
        "status": status,
        "last_reading_ts": _iso(state.last_ts) if state else None,
        "last_seq": state.last_seq if state else None,
        "readings": state.readings if state else 0,
        "predicted_rul": rul,
        "rul_interval": [state.rul_lower, state.rul_upper] if state and rul is not None else None,
        "model_version": state.model_version if state else None,
        "scored_at": _iso(state.scored_at) if state else None,
        "time_unit": _time_unit(platform, machine.machine_type),
        "threshold": policy.threshold,
        "open_work_order_id": order[0] if order else None,
        "open_work_order_priority": order[1] if order else None,
        "trend": trend or [],
    }


def _time_unit(platform: Platform, machine_type: str) -> str | None:
    known = platform.fleet.machine_types.get(machine_type)
    return known.time_unit if known is not None else None


def _open_orders(s: Any, machine_ids: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """Each machine's open work order: (id, priority)."""
    query = select(WorkOrder.machine_id, WorkOrder.id, WorkOrder.priority).where(
        WorkOrder.status.in_(OPEN_STATES)
    )
    if machine_ids is not None:
        query = query.where(WorkOrder.machine_id.in_(machine_ids))
    found: dict[str, tuple[int, str]] = {}
    for machine_id, order_id, priority in s.execute(query.order_by(WorkOrder.id)):
        found[machine_id] = (order_id, priority)
    return found


def _trends(s: Any, points: int) -> dict[str, list[float]]:
    """Each machine's last ``points`` predicted RULs, oldest first (an index seek per machine)."""
    if points <= 0:
        return {}
    recent = (
        select(Prediction.id)
        .where(Prediction.machine_id == Machine.machine_id)
        .order_by(Prediction.id.desc())
        .limit(points)
        .correlate(Machine)
        .scalar_subquery()
    )
    rows = s.execute(
        select(Prediction.machine_id, Prediction.rul)
        .select_from(Machine)
        .join(Prediction, Prediction.id.in_(recent))
        .order_by(Prediction.machine_id, Prediction.id)
    )
    trends: dict[str, list[float]] = {}
    for machine_id, rul in rows:
        trends.setdefault(machine_id, []).append(round(rul, 2))
    return trends


@router.get("/machines", summary="The fleet: last reading, predicted RUL, status, open work order")
def list_machines(
    request: Request,
    lifecycle: Literal["active", "retired", "all"] = "active",
    trend: Annotated[int, Query(ge=0, le=100, description="recent RULs per machine (sparkline)")] = 20,
) -> dict[str, Any]:
    platform = _platform(request)
    with platform.db.session() as s:
        query = select(Machine, MachineState).outerjoin(
            MachineState, MachineState.machine_id == Machine.machine_id
        )
        if lifecycle != "all":
            query = query.where(Machine.status == lifecycle)
        rows = s.execute(query.order_by(Machine.machine_id)).all()
        orders = _open_orders(s)
        trends = _trends(s, trend)
    machines = [
        _machine_json(platform, m, st, orders.get(m.machine_id), trends.get(m.machine_id)) for m, st in rows
    ]
    return {"machines": machines, "count": len(machines), "threshold": platform.policy.threshold}


@router.get("/machines/{machine_id}", summary="One machine")
def get_machine(request: Request, machine_id: str) -> dict[str, Any]:
    platform = _platform(request)
    with platform.db.session() as s:
        machine = s.get(Machine, machine_id)
        if machine is None:
            raise NotFoundError(
                f"no machine {machine_id!r}; GET /api/v1/machines lists them",
                code="machine_not_found",
            )
        state = s.get(MachineState, machine_id)
        orders = s.scalars(
            select(WorkOrder).where(WorkOrder.machine_id == machine_id).order_by(WorkOrder.id.desc())
        ).all()
    open_order = next(((o.id, o.priority) for o in orders if o.status in OPEN_STATES), None)
    body = _machine_json(platform, machine, state, open_order)
    body["work_orders"] = [work_order_json(o) for o in orders]
    return body


@router.get("/machines/{machine_id}/telemetry", summary="Recent readings of a machine, from the lake")
def machine_telemetry(
    request: Request,
    machine_id: str,
    sensors: Annotated[str | None, Query(description="comma-separated sensor names")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 300,
) -> dict[str, Any]:
    platform = _platform(request)
    known = platform.lake.sensors
    wanted = (
        [s.strip() for s in sensors.split(",") if s.strip()] if sensors else platform.fleet.informative[:6]
    )
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise ValidationError(f"unknown sensors {unknown}; known: {known}", code="unknown_sensor")
    frame = platform.lake.read("telemetry", columns=["ts", "seq", *wanted], machine_ids=[machine_id])
    frame = frame.sort("seq").tail(limit)
    return {
        "machine_id": machine_id,
        "seq": frame["seq"].to_list(),
        "ts": [t.isoformat() for t in frame["ts"].to_list()],
        "values": {s: frame[s].to_list() for s in wanted},
    }


@router.get("/machines/{machine_id}/predictions", summary="Prediction history of a machine")
def machine_predictions(
    request: Request, machine_id: str, limit: Annotated[int, Query(ge=1, le=5000)] = 500
) -> dict[str, Any]:
    platform = _platform(request)
    with platform.db.session() as s:
        rows = s.scalars(
            select(Prediction)
            .where(Prediction.machine_id == machine_id)
            .order_by(Prediction.id.desc())
            .limit(limit)
        ).all()
    rows = list(reversed(rows))
    return {
        "machine_id": machine_id,
        "seq": [p.seq for p in rows],
        "ts": [_iso(p.ts) for p in rows],
        "rul": [p.rul for p in rows],
        "rul_lower": [p.rul_lower for p in rows],
        "rul_upper": [p.rul_upper for p in rows],
        "model_version": [p.model_version for p in rows],
    }


@router.get("/work-orders", summary="Maintenance work orders, newest first")
def list_work_orders(
    request: Request,
    status: Literal["open", "closed", "all", "acknowledged", "in_progress", "done", "cancelled"] = "all",
    priority: Literal["urgent", "high", "normal"] | None = None,
    machine_type: str | None = None,
    machine_id: str | None = None,
    due_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> dict[str, Any]:
    """Filter by state (``open`` and ``closed`` are groups), priority, machine type or machine,
    and due date."""
    platform = _platform(request)
    if due_before is not None and due_before.tzinfo is None:
        raise ValidationError(
            "due_before needs a timezone (e.g. 2026-12-01T00:00:00Z)", code="naive_timestamp"
        )
    with platform.db.session() as s:
        query = select(WorkOrder, Machine.machine_type).join(
            Machine, Machine.machine_id == WorkOrder.machine_id
        )
        if status == "open":
            query = query.where(WorkOrder.status.in_(OPEN_STATES))
        elif status == "closed":
            query = query.where(WorkOrder.status.not_in(OPEN_STATES))
        elif status != "all":
            query = query.where(WorkOrder.status == status)
        if priority is not None:
            query = query.where(WorkOrder.priority == priority)
        if machine_type is not None:
            query = query.where(Machine.machine_type == machine_type)
        if machine_id is not None:
            query = query.where(WorkOrder.machine_id == machine_id)
        if due_before is not None:
            query = query.where(WorkOrder.due_at <= due_before)
        rows = s.execute(query.order_by(WorkOrder.id.desc()).limit(limit)).all()
    orders = [{**work_order_json(o), "machine_type": t} for o, t in rows]
    return {"work_orders": orders, "count": len(orders)}


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["acknowledged", "in_progress", "done", "cancelled"] = Field(
        description="open → acknowledged → in_progress → done | cancelled (cancelled from any open state)"
    )
    finding: Literal[FINDINGS] | None = Field(  # type: ignore[valid-type]
        None, description="the technician's finding; required for done"
    )
    note: str | None = Field(None, max_length=4000)
    technician: str | None = Field(
        None,
        max_length=128,
        description="ignored: the technician is the logged-in user (kept for old clients)",
    )


@router.post(
    "/work-orders/{order_id}/transition",
    summary="Move a work order through its lifecycle; closing it records the technician's finding",
)
def transition_work_order(request: Request, order_id: int, body: TransitionRequest) -> dict[str, Any]:
    """``done`` with a repair writes a ``maintenance`` event (the machine's baseline resets);
    ``done`` with ``no_fault_found`` an ``inspection`` event. Both carry the finding: feedback
    for training and monitoring. Moves not in the lifecycle are a 409 ``invalid_transition``. The
    technician recorded (on the order, the event and the audit) is the caller, never a typed name."""
    who: Principal = request.state.principal
    return transition(
        _platform(request), order_id, body.status, body.finding, body.note, technician=who.name, role=who.role
    )


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machine_ids: list[str] | None = Field(None, description="score these machines' current state")
    rows: list[dict[str, Any]] | None = Field(None, description="feature rows: {feature name: number}")
    machine_type: str | None = Field(
        None, description="whose model scores the rows (default: the fleet's first machine type)"
    )


async def predict(request: Request) -> Response:
    """Feature rows are scored on the event loop (a fraction of a millisecond each, no I/O);
    machines' current state reads the lake, in a worker thread."""
    body = await parse_body(request, PredictRequest)
    platform = _platform(request)
    scorer = platform.deployment_for(body.machine_type or platform.default_type).champion
    if (body.machine_ids is None) == (body.rows is None):
        raise ValidationError("send exactly one of 'machine_ids' or 'rows'", code="invalid_request")
    if body.rows is not None:
        if not body.rows:
            raise ValidationError("'rows' is empty", code="invalid_request")
        scores = scorer.score_matrix(scorer.matrix_from_rows(body.rows))
        result = {"predictions": [s.to_dict() for s in scores]}
    else:
        result = await run_in_threadpool(_predict_machines, platform, body.machine_ids or [])
    return Response(orjson.dumps(result), media_type="application/json")


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    summary="RUL for feature rows, or for machines' current state",
    response_model=dict[str, Any],
    route_class_override=RequestRoute,
    openapi_extra=body_schema(PredictRequest),
)


def _predict_machines(platform: Platform, machine_ids: list[str]) -> dict[str, Any]:
    """Each machine scored by its own type's champion, in the order asked."""
    ids = list(dict.fromkeys(machine_ids))
    if not ids:
        raise ValidationError("'machine_ids' is empty", code="invalid_request")
    with platform.db.session() as s:
        query = select(Machine.machine_id, Machine.machine_type).where(Machine.machine_id.in_(ids))
        registered = {machine_id: machine_type for machine_id, machine_type in s.execute(query)}
    by_type: dict[str, list[str]] = {}
    for m in ids:
        found = registered.get(m)
        machine_type = found if found in platform.deployments else platform.default_type
        by_type.setdefault(machine_type, []).append(m)
    out: dict[str, dict[str, Any]] = {}
    for machine_type, members in by_type.items():
        for row in _predict_type(platform, machine_type, members):
            out[row["machine_id"]] = row
    return {"predictions": [out[m] for m in ids]}


def _latest_features(platform: Platform, machine_type: str, ids: list[str]) -> tuple[Any, pl.DataFrame]:
    """The type's champion and each machine's current feature row, in the order of ``ids``."""
    scorer = platform.deployment_for(machine_type).champion
    spec = scorer.model.bundle.spec
    have = set(platform.lake.columns("telemetry"))
    history = platform.lake.read(
        "telemetry",
        columns=["machine_id", "ts", "seq", "bus_position", *(c for c in spec.inputs if c in have)],
        machine_ids=ids,
    ).with_columns(pl.lit(None, pl.Float64).alias(c) for c in spec.inputs if c not in have)
    missing = sorted(set(ids) - set(history["machine_id"].unique().to_list()))
    if missing:
        raise NotFoundError(f"no readings in the lake for {missing}", code="machine_not_found")
    events = platform.lake.read("events", machine_ids=ids)
    latest = build_features(history, spec, events).group_by("machine_id").agg(pl.all().sort_by("seq").last())
    latest = latest.sort(pl.col("machine_id").replace_strict({m: i for i, m in enumerate(ids)}))
    return scorer, latest


def _predict_type(platform: Platform, machine_type: str, ids: list[str]) -> list[dict[str, Any]]:
    scorer, latest = _latest_features(platform, machine_type, ids)
    scores = scorer.score_matrix(latest.select(scorer.model.bundle.spec.names).to_numpy())
    return [
        {"machine_id": m, "machine_type": machine_type, "seq": seq, **s.to_dict()}
        for m, seq, s in zip(latest["machine_id"], latest["seq"], scores, strict=True)
    ]


@router.get("/machines/{machine_id}/explanation", summary="Why the machine's current score is what it is")
def machine_explanation(request: Request, machine_id: str) -> dict[str, Any]:
    """The champion scores the machine's current state; the sensors that pushed its RUL down the
    most, the suspected component and that component's procedure for the score's priority."""
    platform = _platform(request)
    with platform.db.session() as s:
        machine = s.get(Machine, machine_id)
        if machine is None:
            raise NotFoundError(f"no machine {machine_id!r}", code="machine_not_found")
        machine_type = machine.machine_type
    if machine_type not in platform.deployments:
        raise NotFoundError(f"no model serves machine type {machine_type}", code="no_prediction")
    try:
        scorer, latest = _latest_features(platform, machine_type, [machine_id])
    except NotFoundError:
        raise NotFoundError(f"{machine_id} has no readings yet", code="no_prediction") from None
    bundle = scorer.model.bundle
    row = latest.select(bundle.spec.names).to_numpy()
    score = scorer.score_matrix(row)[0]
    policy = platform.policy_for(machine_type)
    priority = policy.priority(score.lower)
    explained = platform.components.explain(bundle, row[0], machine_type, priority)
    return {
        "machine_id": machine_id,
        "machine_type": machine_type,
        "seq": int(latest["seq"][0]),
        "model_version": score.model_version,
        "score": score.to_dict(),
        "priority": priority,
        **explained.to_dict(),
    }
