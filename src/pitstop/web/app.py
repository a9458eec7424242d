from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from pitstop import __version__
from pitstop.assistant import Assistant
from pitstop.ingest import Intake
from pitstop.ingest import router as ingest_router
from pitstop.ingest.admin import router as admin_router
from pitstop.ingest.agent_models import AgentModels
from pitstop.ingest.agent_models import router as agent_models_router
from pitstop.serving.deployment import follow_in_background
from pitstop.web.api import router as api_router
from pitstop.web.api_alerts import router as alerts_router
from pitstop.web.api_assistant import UserRate
from pitstop.web.api_assistant import router as assistant_router
from pitstop.web.api_deployments import router as deployments_router
from pitstop.web.api_features import router as features_router
from pitstop.web.api_models import router as models_router
from pitstop.web.api_ops import router as ops_router
from pitstop.web.api_scores import router as scores_router
from pitstop.web.errors import install_error_handlers
from pitstop.web.fastpath import FastAPIWithFastPath
from pitstop.web.guard import Guard, GuardedRoute, check_every_route
from pitstop.web.history import MachineHistory
from pitstop.web.limits import RequestLimits
from pitstop.web.login import LoginThrottle
from pitstop.web.login import router as login_router
from pitstop.web.pages import router as pages_router
from pitstop.web.permissions import role_has
from pitstop.web.request_ids import RequestIds
from pitstop.web.sessions import Sessions
from pitstop.web.trends import Trends
from pitstop.web.users import Users

if TYPE_CHECKING:
    from pitstop.config import Settings
    from pitstop.platform import Platform
    from pitstop.processor import Processor

log = logging.getLogger(__name__)

STATIC = resources.files("pitstop.web") / "static"


def create_app(platform: Platform, processor: Processor | None = None) -> FastAPI:
    """The HTTP app over a running platform. Serving the model needs ``platform.scorer`` loaded."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        intake: Intake = app.state.intake
        if intake.workers is not None:
            await asyncio.to_thread(intake.workers.start)  # spawn them now, not on the first batch
        gc.freeze()  # what startup built lives as long as the server: keep it out of collections
        # without a processor in this server, follow each type's champion alias here
        follow = (
            None
            if processor is not None
            else follow_in_background(list(platform.deployments.values()), platform.settings.serving_poll_s)
        )
        if platform.notifier is not None:
            platform.notifier.start()  # webhooks and alerts from the outbox, overdue work orders
        try:
            yield
        finally:
            if follow is not None:
                follow.set()
            await asyncio.to_thread(intake.close)

    # no Swagger UI: it loads its scripts from a CDN; the schema is at /openapi.json
    app = FastAPIWithFastPath(
        title="Pitstop", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.router.route_class = GuardedRoute  # every route passes the permission table
    settings = platform.settings
    app.state.platform = platform
    app.state.processor = processor
    app.state.replay = None
    app.state.intake = Intake(platform)
    app.state.agent_models = AgentModels(
        platform.deployments,
        platform.policies,
        platform.policy,
        platform.lake,
        settings.data_dir / "state" / "agent-models",
    )
    app.state.users = Users(platform.db)
    app.state.trends = Trends(platform.db)
    app.state.history = MachineHistory(platform.lake)
    app.state.guard = Guard(
        app.state.users,
        Sessions(platform.db, settings.session_idle_s, settings.session_max_s),
        platform.admin_token(),
        settings.auth_cache_s,
        settings.metrics_public,
    )
    app.state.login_throttle = LoginThrottle(settings.login_max_failures, settings.login_window_s)
    app.state.assistant = Assistant.from_platform(platform, role_has)
    app.state.assistant_rate = UserRate(settings.assistant_rate_per_minute)
    install_error_handlers(app)
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIds)  # even a refused request has an id
    # outermost: the usual prediction request answered before the framework (web.fastpath)
    app.install_fast_path(platform, settings.max_body_bytes)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        if processor is not None:
            platform.metrics.bus_lag.set(processor.lag())
        _work_orders_by_state(platform)
        return Response(platform.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # the hot routes first: Starlette tries the routes in order, and each miss costs a match
    app.include_router(ingest_router)
    app.include_router(scores_router)
    app.include_router(features_router)
    app.include_router(agent_models_router)
    app.include_router(admin_router)
    app.include_router(api_router)
    app.include_router(models_router)
    app.include_router(deployments_router)
    app.include_router(ops_router)
    app.include_router(alerts_router)
    app.include_router(assistant_router)
    app.include_router(login_router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    check_every_route(app.routes)
    return app


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for the app. Forwarded headers are trusted only from the proxies
    named in ``forwarded_allow_ips``: otherwise a client could pick its own address (and slip
    the login throttle) or claim https."""
    trusted = settings.forwarded_allow_ips.strip()
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
    )


def _work_orders_by_state(platform: Platform) -> None:
    """The ``pitstop_work_orders{state}`` gauge, counted from the ops DB at scrape time."""
    from sqlalchemy import func, select

    from pitstop.store import WorkOrder

    with platform.db.session() as s:
        query = select(WorkOrder.status, func.count()).group_by(WorkOrder.status)
        counts = {state: n for state, n in s.execute(query)}
    for state in ("open", "acknowledged", "in_progress", "done", "cancelled"):
        platform.metrics.work_orders.labels(state).set(counts.get(state, 0))
