"""Online features: each machine's current feature vector, as its type's champion scores it.

``GET /api/v1/features?machine_ids=a,b,c`` reads the processor's online store (see
``pitstop.features.store``): per machine type the feature names once and a values matrix, one row
per machine in the order asked, with the seq and time of the last reading folded in and the model
version and spec hash the rows were computed for. The route's own time is in ``Server-Timing``.

The store lives in the processor's process. A server without one (``serve --no-processor``, the
scale-out API servers) answers 409 ``online_features_unavailable``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from pitstop.errors import ConflictError, ValidationError
from pitstop.features.store import OnlineStore
from pitstop.web.routing import RequestRoute

router = APIRouter(prefix="/api/v1", tags=["fleet"])

_ID_CHARS = 200  # a machine id longer than this is no machine id


def online_store(request: Request) -> OnlineStore:
    processor = request.app.state.processor
    if processor is None:
        raise ConflictError(
            "this server runs no stream processor, so it holds no online features: ask a server started "
            "with `pitstop serve` (processor in process), or read features offline from the lake",
            code="online_features_unavailable",
        )
    store: OnlineStore = processor.store
    return store


def parse_ids(request: Request, cap: int) -> list[str]:
    """``machine_ids`` (comma-separated, or repeated), without duplicates, in the order given."""
    given = request.query_params.getlist("machine_ids")
    if not given:
        raise ValidationError("give 'machine_ids', e.g. ?machine_ids=h-001,h-002", code="invalid_request")
    ids = list(dict.fromkeys(m.strip() for part in given for m in part.split(",")))
    if "" in ids:
        raise ValidationError("'machine_ids' holds an empty id", code="invalid_machine_id")
    if len(ids) > cap:
        raise ValidationError(
            f"{len(ids)} machines asked; at most {cap} per request (setting features_max_ids)",
            code="too_many_machines",
        )
    if any(len(m) > _ID_CHARS for m in ids):
        raise ValidationError(
            f"a machine id is longer than {_ID_CHARS} characters", code="invalid_machine_id"
        )
    return ids


async def features(request: Request) -> Response:
    """No I/O and a fraction of a millisecond: served on the event loop."""
    started = time.perf_counter()
    ids = parse_ids(request, request.app.state.platform.settings.features_max_ids)
    found, missing = online_store(request).lookup(ids, matrix=False)
    types: dict[str, Any] = {
        rows.machine_type: {
            "names": rows.names,
            "model_version": rows.model_version,
            "spec_hash": rows.spec_hash,
            "machine_ids": rows.machine_ids,
            "seq": rows.seq,
            "ts": rows.ts,
            "values": orjson.Fragment(rows.values_json),
        }
        for rows in found
    }
    body = orjson.dumps(
        {"count": len(ids) - len(missing), "types": types, "missing": missing},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    took = (time.perf_counter() - started) * 1000
    return Response(body, media_type="application/json", headers={"Server-Timing": f"app;dur={took:.3f}"})


router.add_api_route(
    "/features",
    features,
    methods=["GET"],
    summary="Machines' current online feature vectors (engineers)",
    response_model=dict[str, Any],
    route_class_override=RequestRoute,
    openapi_extra={
        "parameters": [
            {
                "name": "machine_ids",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": "machine ids, comma-separated (at most features_max_ids)",
            }
        ]
    },
)
