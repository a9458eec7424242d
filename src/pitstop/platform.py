"""Wires the rooms together from one ``Settings``: the explicit setup that importing never does."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field

from pitstop.bus import Bus, SqliteBus
from pitstop.config import Settings
from pitstop.lake import Lake
from pitstop.maintenance import RiskPolicy
from pitstop.monitoring import Metrics
from pitstop.registry import Registry
from pitstop.schema import FleetSchema, default_fleet
from pitstop.serving import Scorer
from pitstop.store import Database

log = logging.getLogger(__name__)


def open_bus(settings: Settings) -> Bus:
    """The bus the settings name; the processing code is the same for every backend."""
    if settings.bus_backend == "nats":
        from pitstop.bus.nats import NatsBus

        return NatsBus(settings.nats_url, stream=settings.nats_stream)
    return SqliteBus(settings.bus_path)


@dataclass
class Platform:
    settings: Settings
    fleet: FleetSchema
    db: Database
    bus: Bus
    lake: Lake
    registry: Registry
    scorer: Scorer
    policy: RiskPolicy
    challenger: Scorer | None = None
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def open(cls, settings: Settings, fleet: FleetSchema | None = None) -> Platform:
        """Create (or reuse) the data directory: ops DB migrated, bus, lake tables, MLflow store."""
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        fleet = fleet or default_fleet()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.ops_db_url)
        db.migrate()
        lake = Lake(settings.lake_dir, fleet.sensors)
        lake.ensure()
        registry = Registry(settings.mlflow_uri, settings.mlflow_artifacts_dir, settings.model_name)
        return cls(
            settings=settings,
            fleet=fleet,
            db=db,
            bus=open_bus(settings),
            lake=lake,
            registry=registry,
            scorer=Scorer(registry, cache_dir=settings.data_dir / "state" / "models"),
            policy=RiskPolicy(settings.work_order_rul_threshold),
            challenger=Scorer(registry, alias="challenger") if settings.deployment != "champion" else None,
        )

    def admin_token(self) -> str:
        """The admin API token: the ``admin_token`` setting, else one generated once into the data dir."""
        if self.settings.admin_token is not None:
            return self.settings.admin_token.get_secret_value()
        path = self.settings.data_dir / "admin-token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def close(self) -> None:
        self.bus.close()
        self.db.close()
