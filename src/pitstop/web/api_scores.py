"""Scores: REST predictions for feature rows or machines' current state, and the explanation of a
machine's current score."""

from __future__ import annotations

from dataclasses import dataclass
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
from pitstop.serving.matrix import ARROW_STREAM, too_many_rows
from pitstop.store import Machine
from pitstop.web.routing import OrjsonRoute, RequestRoute, body_schema, loads_body, validate_body

router = APIRouter(prefix="/api/v1", tags=["fleet"], route_class=OrjsonRoute)


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machine_ids: list[str] | None = Field(None, description="score these machines' current state")
    rows: list[dict[str, Any]] | None = Field(None, description="feature rows: {feature name: number}")
    columns: list[str] | None = Field(
        None, description="with 'data': the feature names, in the order of each data row's values"
    )
    data: list[list[Any]] | None = Field(
        None, description="with 'columns': feature rows as lists of numbers (the lighter form for many rows)"
    )
    machine_type: str | None = Field(
        None, description="whose model scores the rows (default: the fleet's first machine type)"
    )


_ROWS_FORM = frozenset({"rows", "machine_type"})
_COLUMNS_FORM = frozenset({"columns", "data", "machine_type"})


@dataclass(frozen=True)
class _Body:
    """A ``PredictRequest``'s fields, without pydantic's cost per request."""

    machine_ids: list[str] | None = None
    rows: list[dict[str, Any]] | None = None
    columns: list[str] | None = None
    data: list[list[Any]] | None = None
    machine_type: str | None = None


def _usual(data: Any) -> _Body | None:
    """The usual bodies (feature rows, or columns with data, and an optional machine type) checked
    by hand: pydantic would copy every row. None: ``validate_body`` checks (and names) the rest."""
    if type(data) is not dict:
        return None
    machine_type = data.get("machine_type")
    if machine_type is not None and type(machine_type) is not str:
        return None
    keys = data.keys()
    if keys <= _ROWS_FORM:
        rows = data.get("rows")
        if type(rows) is list and all(type(row) is dict for row in rows):
            return _Body(rows=rows, machine_type=machine_type)
    elif keys <= _COLUMNS_FORM:
        columns, values = data.get("columns"), data.get("data")
        if (
            type(columns) is list
            and type(values) is list
            and all(type(c) is str for c in columns)
            and all(type(v) is list for v in values)
        ):
            return _Body(columns=columns, data=values, machine_type=machine_type)
    return None


async def predict(request: Request) -> Response:
    """Feature rows are scored on the event loop (a fraction of a millisecond each, no I/O);
    machines' current state reads the lake, in a worker thread. The usual request is answered
    before it gets here, by ``pitstop.web.fastpath``, with the same ``score_rows``
    (``score_arrow`` for an Arrow body)."""
    raw = await request.body()
    _platform(request).metrics.rest_predict.labels("route").inc()
    if is_arrow(request.headers.get("content-type")):
        answer = score_arrow(_platform(request), raw, request.query_params.get("machine_type"))
        return Response(answer, media_type="application/json")
    parsed = loads_body(raw)
    body = _usual(parsed) or _Body(**validate_body(parsed, PredictRequest).model_dump())
    platform = _platform(request)
    platform.deployment_for(body.machine_type or platform.default_type)  # an unknown type first
    columnar = body.columns is not None or body.data is not None
    if (body.machine_ids is not None) + (body.rows is not None) + columnar != 1:
        raise ValidationError(
            "send exactly one of 'machine_ids', 'rows', or 'columns' with 'data'", code="invalid_request"
        )
    if body.machine_ids is not None:
        result = await run_in_threadpool(_predict_machines, platform, body.machine_ids)
        return Response(orjson.dumps(result), media_type="application/json")
    return Response(score_rows(platform, body), media_type="application/json")


def score_rows(platform: Platform, body: _Body) -> bytes:
    """The answer (JSON) to a body of feature rows or of columns with data, scored by the champion
    of its machine type; a ``ValidationError`` for a body that cannot be scored."""
    scorer = platform.deployment_for(body.machine_type or platform.default_type).champion
    _at_most(platform, len(body.rows if body.rows is not None else body.data or ()))
    if body.rows is not None:
        if not body.rows:
            raise ValidationError("'rows' is empty", code="invalid_request")
        features = scorer.matrix_from_rows(body.rows)
    else:
        if body.columns is None or body.data is None:
            raise ValidationError("'columns' and 'data' go together", code="invalid_request")
        if not body.data:
            raise ValidationError("'data' is empty", code="invalid_request")
        features = scorer.matrix_from_columns(body.columns, body.data)
    return orjson.dumps({"predictions": scorer.score_dicts(features)})


def is_arrow(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` says its body is an Arrow IPC stream."""
    return content_type is not None and content_type.partition(";")[0].strip().lower() == ARROW_STREAM


def score_arrow(platform: Platform, raw: bytes, machine_type: str | None) -> bytes:
    """The answer (JSON, as for the other forms) to feature rows sent as an Arrow IPC stream
    (``serving.matrix.from_arrow``), scored by the champion of ``machine_type`` (the query
    parameter; default: the fleet's first type)."""
    scorer = platform.deployment_for(machine_type or platform.default_type).champion
    features = scorer.matrix_from_arrow(raw, platform.settings.max_predict_rows)
    return orjson.dumps({"predictions": scorer.score_dicts(features)})


def _at_most(platform: Platform, rows: int) -> None:
    """A 422 ``too_many_rows`` past ``max_predict_rows`` (the rows are scored on the event loop)."""
    limit = platform.settings.max_predict_rows
    if rows > limit:
        raise too_many_rows(limit)


def usual_body(raw: bytes) -> _Body | None:
    """The usual predict body (feature rows, or columns with data) from raw JSON; None for any
    other body, or one that is not JSON orjson reads."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return _usual(parsed)


def _predict_openapi() -> dict[str, Any]:
    """The JSON body, and the Arrow IPC stream with its ``machine_type`` query parameter."""
    extra = body_schema(PredictRequest)
    extra["requestBody"]["description"] = (
        "JSON (machine_ids, rows, or columns with data), or an Arrow IPC stream "
        f"({ARROW_STREAM}): a table of one numeric column per feature, or one column of feature "
        "vectors (fixed_size_list<double>[k] or arrow.fixed_shape_tensor) with the features' names "
        "as a JSON list under the schema metadata key 'pitstop.features'"
    )
    extra["requestBody"]["content"][ARROW_STREAM] = {"schema": {"type": "string", "format": "binary"}}
    extra["parameters"] = [
        {
            "name": "machine_type",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "an Arrow body's machine type (default: the fleet's first); JSON bodies "
            "carry it in the body",
        }
    ]
    return extra


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    summary="RUL for feature rows, or for machines' current state",
    response_model=dict[str, Any],
    route_class_override=RequestRoute,
    openapi_extra=_predict_openapi(),
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
