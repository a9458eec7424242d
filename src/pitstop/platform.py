"""Wires the rooms together from one ``Settings``: the explicit setup that importing never does."""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from pitstop.bus import Bus, SqliteBus
from pitstop.config import Settings
from pitstop.errors import StorageError, ValidationError, first_line
from pitstop.fleetops import stored_fleet
from pitstop.lake import Lake, LakeLocation
from pitstop.lake.outbox import Outbox
from pitstop.maintenance import ComponentMap, Notifier, RiskPolicy
from pitstop.maintenance.notify_routes import AlertRoutes
from pitstop.monitoring import Metrics
from pitstop.monitoring.alerts import AlertPolicy, Alerts
from pitstop.registry import Registry
from pitstop.schema import FleetSchema, default_fleet
from pitstop.serving import Scorer
from pitstop.serving.deployment import Deployment, DeploymentOptions
from pitstop.store import Database

log = logging.getLogger(__name__)


def _read_only(data_dir: Path) -> bool:
    """A data dir on a read-only mount, or one this user may not write (even root cannot write a
    read-only mount: SQLite then says only "unable to open database file")."""
    try:
        return bool(os.statvfs(data_dir).f_flag & os.ST_RDONLY) or not os.access(data_dir, os.W_OK)
    except OSError:
        return False


def storage_error(data_dir: Path, exc: BaseException) -> StorageError:
    """One clear line for a data dir that cannot be used, with what to check."""
    text = first_line(exc)
    lowered = text.lower()
    if (
        "readonly" in lowered
        or "read-only" in lowered
        or isinstance(exc, PermissionError)
        or _read_only(data_dir)
    ):
        hint = "it is read-only for this user: run as its owner or fix its permissions"
    elif "disk is full" in lowered or "no space" in lowered:
        hint = "the disk is full: free space, then start again"
    elif "not a database" in lowered or "malformed" in lowered:
        hint = "a database file is damaged: restore the data dir from a backup (`pitstop restore`)"
    else:
        hint = "check that it exists, is writable and has free space"
    return StorageError(f"cannot use the data dir {data_dir}: {text} ({hint})")


def open_bus(settings: Settings) -> Bus:
    """The bus the settings name; the processing code is the same for every backend."""
    if settings.bus_backend == "nats":
        from pitstop.bus.nats import NatsBus

        return NatsBus(settings.nats_url, stream=settings.nats_stream, partitions=settings.bus_partitions)
    return SqliteBus(settings.bus_path)


@dataclass
class Platform:
    settings: Settings
    fleet: FleetSchema
    db: Database
    bus: Bus
    lake: Lake
    deployments: dict[str, Deployment]  # per machine type: its registry, champion and challenger
    policy: RiskPolicy
    metrics: Metrics = field(default_factory=Metrics)
    components: ComponentMap = field(default_factory=lambda: ComponentMap({}))
    policies: dict[str, RiskPolicy] = field(default_factory=dict)  # per machine type, with overrides
    notifier: Notifier | None = None
    alerts: Alerts | None = None
    outbox: Outbox = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.db, self.lake)
        self.outbox.reserve_ids()

    @classmethod
    def open(cls, settings: Settings, fleet: FleetSchema | None = None) -> Platform:
        """Create (or reuse) the data directory: ops DB migrated, bus, lake tables, MLflow store.
        A data dir that cannot be written (read-only, full, damaged) is one ``StorageError``."""
        try:
            return cls._open(settings, fleet)
        except (OSError, SQLAlchemyError, sqlite3.Error) as exc:
            raise storage_error(settings.data_dir, exc) from exc

    @classmethod
    def _open(cls, settings: Settings, fleet: FleetSchema | None = None) -> Platform:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.ops_db_url)
        db.migrate()
        _private(settings.data_dir)
        if fleet is None:  # the fleet applied to this deployment (pitstop fleet apply), else turbofan
            stored = stored_fleet(db)
            fleet = stored[0] if stored is not None else default_fleet()
        lake = Lake(LakeLocation.from_settings(settings), fleet.sensors)
        lake.ensure()
        metrics = Metrics()
        options = DeploymentOptions.from_settings(settings)
        deployments = {}
        for name in fleet.machine_types:
            key = settings.model_signing_key
            registry = Registry(
                settings.mlflow_tracking_uri,
                settings.mlflow_artifacts_uri,
                model_name_for(settings.model_name, name),
                signing_key=key.get_secret_value() if key is not None else None,
                s3_endpoint_url=settings.s3_endpoint_url,
            )
            deployments[name] = Deployment(
                name,
                registry,
                options,
                db.audit,
                cache_dir=settings.data_dir / "state" / "models" / name,
                on_model=_model_gauge(metrics, registry.model_name),
            )
        # built once: a bad per-type policy fails at start, not on a batch
        policies = {
            name: RiskPolicy.from_settings(settings, name, mt.policy, mt.unit_seconds)
            for name, mt in fleet.machine_types.items()
        }
        platform = cls(
            settings=settings,
            fleet=fleet,
            db=db,
            bus=open_bus(settings),
            lake=lake,
            deployments=deployments,
            policy=RiskPolicy.from_settings(settings),
            metrics=metrics,
            components=(
                ComponentMap.load(settings.component_map)
                if settings.component_map is not None
                else ComponentMap.from_fleet(fleet)
            ),
            policies=policies,
        )
        routes = AlertRoutes.from_settings(settings)
        signed = settings.webhook_urls or routes.webhooks
        platform.notifier = Notifier(
            db,
            settings.webhook_urls,
            platform.webhook_secret() if signed else "",
            settings.webhook_max_backoff_s,
            allow_link_local=settings.webhook_allow_link_local,
            routes=routes,
        )
        # alerts from audit rows, sent through the outbox; overdue orders checked on its thread
        platform.alerts = Alerts(AlertPolicy.from_settings(settings), platform.notifier.enqueue_alert)
        platform.alerts.attach(db)
        platform.notifier.every(settings.alert_check_s, platform.alerts.sweep)
        return platform

    @property
    def default_type(self) -> str:
        """The fleet's first machine type: what commands act on without ``--machine-type``."""
        return next(iter(self.fleet.machine_types))

    @property
    def registry(self) -> Registry:
        """The first machine type's registry (a fleet of one type: its only one)."""
        return self.deployments[self.default_type].registry

    @property
    def scorer(self) -> Scorer:
        """The first machine type's champion."""
        return self.deployments[self.default_type].champion

    @property
    def challenger(self) -> Scorer | None:
        return self.deployments[self.default_type].challenger

    def deployment_for(self, machine_type: str) -> Deployment:
        found = self.deployments.get(machine_type)
        if found is None:
            raise ValidationError(
                f"unknown machine type {machine_type!r}; the fleet has {', '.join(self.fleet.machine_types)}",
                code="unknown_machine_type",
            )
        return found

    def registry_for(self, machine_type: str) -> Registry:
        """The registry of a machine type's model (one registered model per type)."""
        return self.deployment_for(machine_type).registry

    def policy_for(self, machine_type: str) -> RiskPolicy:
        """The risk policy for a machine type: the fleet's, with the type's overrides."""
        return self.policies.get(machine_type, self.policy)

    def webhook_secret(self) -> str:
        """The webhook HMAC key: the ``webhook_secret`` setting, else one generated once into the data dir."""
        if self.settings.webhook_secret is not None:
            return self.settings.webhook_secret.get_secret_value()
        return _generated_secret(self.settings.data_dir / "webhook-secret")

    def admin_token(self) -> str:
        """The admin API token: the ``admin_token`` setting, else one generated once into the data dir."""
        if self.settings.admin_token is not None:
            return self.settings.admin_token.get_secret_value()
        return _generated_secret(self.settings.data_dir / "admin-token")

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
        self.bus.close()
        self.db.close()


def _model_gauge(metrics: Metrics, name: str) -> Callable[[str, str | None, str | None], None]:
    """The serving-model gauge, moved when a deployment's model changes."""

    def moved(alias: str, before: str | None, after: str | None) -> None:
        if before is not None:
            metrics.model_info.labels(name, before, alias).set(0)
        if after is not None:
            metrics.model_info.labels(name, after, alias).set(1)

    return moved


def model_name_for(base: str, machine_type: str) -> str:
    """The registered model name of a machine type's model: ``<model_name>-<type>``."""
    return f"{base}-{machine_type}"


def _generated_secret(path: Path) -> str:
    """A random secret generated once into ``path`` (mode 0600), then read from it."""
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process wrote it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _private(data_dir: Path) -> None:
    """The data dir is the owner's alone (0700) and so are its databases and secrets (0600): they
    hold device tokens' hashes, the admin token, the webhook secret and every reading. Files made
    later are private too under the CLI's umask (077); below a 0700 folder nobody else can reach
    them anyway. A read-only data dir is left as it is (opening it fails later, with its own
    message)."""
    try:
        data_dir.chmod(0o700)
        for path in data_dir.iterdir():
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600)
    except OSError as exc:
        log.warning("could not make %s private: %s", data_dir, exc)
