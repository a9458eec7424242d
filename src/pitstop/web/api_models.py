"""Models per machine type: champion, challenger and what made them; promote and roll back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from pitstop.errors import ModelError
from pitstop.platform import Platform
from pitstop.serving.deploy import CHALLENGER, CHAMPION, PREVIOUS, promote, rollback
from pitstop.serving.deployment import Deployment
from pitstop.store import Prediction
from pitstop.web.routing import OrjsonRoute
from pitstop.web.users import Principal

router = APIRouter(prefix="/api/v1", tags=["models"], route_class=OrjsonRoute)


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@router.get("/models", summary="Per machine type: champion, challenger, lineage, deployment, retrains")
def models(request: Request) -> dict[str, Any]:
    platform = _platform(request)
    moves = _model_moves(platform.db.audit_entries(limit=500))  # read once for every type
    by_type = {name: _type_json(platform, name, d, moves) for name, d in platform.deployments.items()}
    first = by_type[platform.default_type]
    return {"serving": first["serving"], "versions": first["versions"], "machine_types": by_type}


def _type_json(
    platform: Platform, machine_type: str, deployment: Deployment, moves: list[dict[str, Any]]
) -> dict[str, Any]:
    registry = deployment.registry
    scorer = deployment.champion
    try:
        versions = registry.versions()
        unavailable = None
    except ModelError as exc:  # the store is broken: say so, and show what is serving (cached)
        versions, unavailable = [], exc.message
    by_alias = {alias: v for v in versions for alias in v["aliases"]}
    return {
        "model": registry.model_name,
        "registry": {"available": unavailable is None, "problem": unavailable},
        "serving": _serving_json(scorer.model, scorer.alias) if scorer.loaded else None,
        "champion": _version_json(registry, by_alias.get(CHAMPION)),
        "challenger": _version_json(registry, by_alias.get(CHALLENGER)),
        "previous": _version_json(registry, by_alias.get(PREVIOUS)),
        "deployment": {
            "mode": deployment.options.mode,
            "challenger_percent": deployment.options.challenger_percent,
            "arms": _arms(platform, registry.model_name),
        },
        "retrain_history": _retrains(moves, machine_type),
        "versions": versions,
    }


def _version_json(registry: Any, version: dict[str, Any] | None) -> dict[str, Any] | None:
    if version is None:
        return None
    tags = version.get("tags", {})
    metrics: dict[str, float] = {}
    if version.get("run_id"):
        try:
            metrics = dict(registry.client.get_run(version["run_id"]).data.metrics)
        except Exception:  # a run deleted from the tracking store: show the version without metrics
            metrics = {}
    return {
        "version": version["version"],
        "aliases": version["aliases"],
        "created_at": version["created_at"],
        "run_id": version.get("run_id"),
        "metrics": metrics,
        "lineage": {k.removeprefix("pitstop."): v for k, v in tags.items() if k.startswith("pitstop.")},
        "tags": tags,
    }


def _arms(platform: Platform, model_name: str) -> dict[str, Any]:
    """What each arm scored: predictions, machines, mean RUL, the newest."""
    with platform.db.session() as s:
        rows = s.execute(
            select(
                Prediction.arm,
                Prediction.model_version,
                func.count(),
                func.count(func.distinct(Prediction.machine_id)),
                func.avg(Prediction.rul),
                func.max(Prediction.created_at),
            )
            .where(Prediction.model_name == model_name)
            .group_by(Prediction.arm, Prediction.model_version)
        ).all()
    arms: dict[str, Any] = {}
    for arm, version, n, machines, mean_rul, last in rows:
        arms.setdefault(arm, []).append(
            {
                "model_version": version,
                "predictions": int(n),
                "machines": int(machines),
                "mean_rul": float(mean_rul) if mean_rul is not None else None,
                "last_at": last.isoformat() if last is not None else None,
            }
        )
    return arms


def _model_moves(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audit rows of the retraining loop, promotions and rollbacks."""
    return [
        e
        for e in entries
        if e["action"].startswith("retrain_") or e["action"] in ("model_promoted", "model_rolled_back")
    ]


def _retrains(moves: list[dict[str, Any]], machine_type: str, limit: int = 50) -> list[dict[str, Any]]:
    wanted = [
        e
        for e in moves
        if e["detail"].get("machine_type") in (None, machine_type)
        or str(e["detail"].get("model", "")).endswith(f"-{machine_type}")
    ]
    return wanted[:limit]


def _serving_json(model: Any, alias: str) -> dict[str, Any]:
    bundle = model.bundle
    return {
        "name": model.name,
        "version": model.version,
        "arm": alias,
        "feature_spec_hash": bundle.spec.hash,
        "features": bundle.feature_names,
        "metrics": bundle.metrics,
        "interval": bundle.interval,
        "components": bundle.components,
    }


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(None, max_length=32, description="default: the challenger")
    force: bool = Field(
        False, description="promote a retrain candidate that has not passed its shadow (audited as forced)"
    )


@router.post("/models/{machine_type}/promote", summary="Make a version (default: the challenger) champion")
async def promote_model(request: Request, machine_type: str, body: PromoteRequest) -> dict[str, Any]:
    """The version's artifacts are verified first; running processors switch between two batches."""
    platform = _platform(request)
    deployment = platform.deployment_for(machine_type)
    who: Principal = request.state.principal
    audit = _audit_as(platform, who)
    result = await run_in_threadpool(
        promote, deployment.registry, audit, body.version, who.name, platform.db.audited_move, body.force
    )
    return {"machine_type": machine_type, **result}


@router.post("/models/{machine_type}/rollback", summary="Put the previous champion back")
async def rollback_model(request: Request, machine_type: str) -> dict[str, Any]:
    platform = _platform(request)
    deployment = platform.deployment_for(machine_type)
    who: Principal = request.state.principal
    audit = _audit_as(platform, who)
    result = await run_in_threadpool(rollback, deployment.registry, audit, who.name, platform.db.audited_move)
    return {"machine_type": machine_type, **result}


def _audit_as(platform: Platform, who: Principal) -> Any:
    def audit(actor: str, action: str, **detail: Any) -> None:
        platform.db.audit(actor, action, role=who.role, **detail)

    return audit
