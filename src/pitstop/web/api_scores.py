"""Scores: REST predictions for feature rows or machines' current state, and the explanation of a
machine's current score."""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from pitstop.errors import NotFoundError, ValidationError
from pitstop.features import build_features
from pitstop.platform import Platform
from pitstop.store import Machine
from pitstop.web.routing import OrjsonRoute, RequestRoute, body_schema, parse_body

router = APIRouter(prefix="/api/v1", tags=["fleet"], route_class=OrjsonRoute)


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


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


def _latest_features(
    platform: Platform, machine_type: str, ids: list[str], telemetry: pl.DataFrame | None = None
) -> tuple[Any, pl.DataFrame]:
    """The type's champion and each machine's current feature row, in the order of ``ids``
    (from ``telemetry`` when the caller read the machines' readings already)."""
    scorer = platform.deployment_for(machine_type).champion
    spec = scorer.model.bundle.spec
    have = set(platform.lake.columns("telemetry"))
    columns = ["machine_id", "ts", "seq", "bus_position", *(c for c in spec.inputs if c in have)]
    if telemetry is None:
        telemetry = platform.lake.read("telemetry", columns=columns, machine_ids=ids)
    history = telemetry.select(columns).with_columns(
        pl.lit(None, pl.Float64).alias(c) for c in spec.inputs if c not in have
    )
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
        telemetry = request.app.state.history.get(machine_id)
        scorer, latest = _latest_features(platform, machine_type, [machine_id], telemetry)
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
