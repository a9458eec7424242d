"""The champion for edge agents: a device fetches its machine type's model with its device token.

``GET /api/v1/agent/model`` describes the version (its manifest sha256 as the registry recorded
it, each file's sha256, the type's risk policy and the machine's last feature reset);
``GET /api/v1/agent/model/files/{name}`` serves one of that version's files byte for byte, as
registered. The files are downloaded from the registry once per version, verified, into
``folder``; the agent checks every byte again against the digest (``pitstop.agent.edge``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pitstop.errors import ConflictError, NotFoundError
from pitstop.ingest.devices import DeviceIdentity
from pitstop.ingest.intake import Intake
from pitstop.ingest.routes import _bearer
from pitstop.lake import Lake
from pitstop.maintenance.policy import RiskPolicy
from pitstop.registry.files import MANIFEST_FILE
from pitstop.serving.deployment import Deployment
from pitstop.web.guard import GuardedRoute

router = APIRouter(tags=["agent"], route_class=GuardedRoute)  # a device token, checked here

_RESETS = ("maintenance", "failure")


@dataclass(frozen=True)
class _Version:
    machine_type: str
    version: str
    folder: Path
    manifest_sha256: str
    files: dict[str, str]


class AgentModels:
    """Each machine type's champion files, as registered, for agents."""

    def __init__(
        self,
        deployments: dict[str, Deployment],
        policies: dict[str, RiskPolicy],
        default_policy: RiskPolicy,
        lake: Lake,
        folder: Path,
    ) -> None:
        self.deployments = deployments
        self.policies = policies
        self.default_policy = default_policy
        self.lake = lake
        self.folder = folder
        self._lock = threading.Lock()

    def current(self, machine_type: str) -> _Version:
        """The type's champion: the version this server scores with (else the alias's), its files
        fetched and verified on first use. ``model_not_found`` when the type has none."""
        deployment = self.deployments.get(machine_type)
        version = None
        if deployment is not None:
            champion = deployment.champion
            version = (
                champion.model.version if champion.loaded else deployment.registry.alias_version("champion")
            )
        if deployment is None or version is None:
            raise NotFoundError(
                f"machine type {machine_type!r} has no champion model yet: train one with `pitstop train`",
                code="model_not_found",
            )
        registry = deployment.registry
        folder = self.folder / f"{registry.model_name}-{version}"
        with self._lock:  # one download per version, however many agents ask at once
            if not (folder / "digest").is_file():
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=self.folder))
                try:
                    digest = registry.download_version(version, tmp)
                    (tmp / "digest").write_text(digest)
                    shutil.rmtree(folder, ignore_errors=True)
                    os.replace(tmp, folder)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        return _Version(machine_type, version, folder, (folder / "digest").read_text().strip(), manifest)

    def describe(self, identity: DeviceIdentity) -> dict[str, Any]:
        found = self.current(identity.machine_type)
        policy = self.policies.get(identity.machine_type, self.default_policy)
        return {
            "machine_id": identity.machine_id,
            "machine_type": identity.machine_type,
            "version": found.version,
            "alias": "champion",
            "manifest_sha256": found.manifest_sha256,
            "files": found.files,
            "policy": dataclasses.asdict(policy),
            "episode_start": self._episode_start(identity.machine_id),
        }

    def file(self, identity: DeviceIdentity, name: str, version: str | None) -> bytes:
        found = self.current(identity.machine_type)
        if version is not None and version != found.version:
            raise ConflictError(
                f"the champion is now version {found.version}, not {version}: fetch "
                "/api/v1/agent/model again",
                code="model_changed",
            )
        if name != MANIFEST_FILE and name not in found.files:
            raise NotFoundError(
                f"version {found.version} has no file {name[:100]!r}; its files: {', '.join(found.files)}",
                code="model_file_not_found",
            )
        return (found.folder / name).read_bytes()

    def _episode_start(self, machine_id: str) -> str | None:
        """The machine's last reset event (maintenance, failure): its features restart there."""
        import polars as pl

        events = self.lake.read("events", columns=["machine_id", "ts", "kind"], machine_ids=[machine_id])
        resets = events.filter(pl.col("kind").is_in(list(_RESETS)))
        if resets.is_empty():
            return None
        latest = resets["ts"].max()
        return latest.isoformat() if latest is not None else None  # type: ignore[union-attr]


def _device(request: Request) -> DeviceIdentity:
    intake: Intake = request.app.state.intake
    return intake.authenticate(_bearer(request))


@router.get(
    "/api/v1/agent/model",
    summary="The device's machine type's champion: version, manifest sha256, files, risk policy",
    responses={401: {"description": "missing or unknown device token"}, 404: {"description": "no champion"}},
)
async def agent_model(request: Request) -> JSONResponse:
    models: AgentModels = request.app.state.agent_models

    def run() -> dict[str, Any]:
        return models.describe(_device(request))

    return JSONResponse(await run_in_threadpool(run))


@router.get(
    "/api/v1/agent/model/files/{name}",
    summary="One file of the champion the device's machine type has, byte for byte as registered",
    response_class=Response,
    responses={
        401: {"description": "missing or unknown device token"},
        404: {"description": "no champion, or no such file in it"},
        409: {"description": "the champion moved on from ``version``"},
    },
)
async def agent_model_file(request: Request, name: str, version: str | None = None) -> Response:
    models: AgentModels = request.app.state.agent_models

    def run() -> bytes:
        return models.file(_device(request), name, version)

    return Response(await run_in_threadpool(run), media_type="application/octet-stream")
