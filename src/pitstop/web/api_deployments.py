"""Deployments judged by numbers: per machine type, the champion's arm against the challenger's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from pitstop.monitoring.arms import deployments_report
from pitstop.platform import Platform
from pitstop.web.routing import OrjsonRoute

router = APIRouter(prefix="/api/v1", tags=["models"], route_class=OrjsonRoute)


@router.get("/deployments", summary="Per machine type and arm: predictions, errors at failures, tests")
def deployments(
    request: Request,
    machine_type: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> dict[str, Any]:
    """Per machine type, the champion's and the challenger's arms: prediction distribution, live
    error at failures, work orders and guard events, each metric compared by a test suited to it
    (p-value, effect, verdict, and the sample size per arm it needs), and the progressive canary's
    latest step. The same JSON as ``pitstop deployments report --json``."""
    platform: Platform = request.app.state.platform
    return deployments_report(
        platform.db, platform.deployments, platform.settings.deployments_alpha, machine_type
    )
