"""The scale-out topology, described once: its services, their commands and ports, and the settings
every Pitstop process of it shares.

``pitstop cluster up`` runs it on this machine; ``pitstop cluster render`` writes the compose file and
the Helm values from it, so the three cannot drift apart (a test holds the committed files equal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pitstop.cluster.s3 import CREDENTIALS

Role = Literal["postgres", "s3", "nats", "api", "processor", "dask-scheduler", "dask-worker"]

BUCKET = "pitstop"
OPS_DB = "pitstop"
MLFLOW_DB = "mlflow"
BUS_PARTITIONS = 12
# in-container ports (compose, Helm); on one machine they are base_port + offset instead
API_PORT = 8000
DASK_PORT = 8786


@dataclass(frozen=True)
class Endpoints:
    """Where a cluster's engines answer, as the Pitstop processes reach them."""

    postgres: str  # host:port
    s3: str  # http://host:port
    nats: str  # nats://host:port
    postgres_user: str = "pitstop"

    def database_url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.postgres_user}@{self.postgres}/{database}"


def pitstop_settings(endpoints: Endpoints) -> dict[str, Any]:
    """The settings every API server and processor of the cluster shares (as in a settings file)."""
    return {
        "ops_db_url": endpoints.database_url(OPS_DB),
        "mlflow_tracking_uri": endpoints.database_url(MLFLOW_DB),
        "mlflow_artifacts_uri": f"s3://{BUCKET}/mlartifacts",
        "lake_uri": f"s3://{BUCKET}/lake",
        "s3_endpoint_url": endpoints.s3,
        "lake_storage_options": {
            "endpoint": endpoints.s3,
            "allow_http": "true" if endpoints.s3.startswith("http://") else "false",
            "region": CREDENTIALS["AWS_REGION"],
            "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        },
        "bus_backend": "nats",
        "nats_url": endpoints.nats,
        "bus_partitions": BUS_PARTITIONS,
    }


def settings_env(values: dict[str, Any]) -> dict[str, str]:
    """Settings as ``PITSTOP_*`` environment variables (a dict as JSON, as the settings read it)."""
    env = {}
    for name, value in values.items():
        if isinstance(value, dict | list):
            text = json.dumps(value, sort_keys=True)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"PITSTOP_{name.upper()}"] = text
    return env


def s3_env(endpoints: Endpoints) -> dict[str, str]:
    """What boto3 (MLflow's artifacts) and delta-rs read for the S3 endpoint and its keys."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoints.s3, "MLFLOW_S3_ENDPOINT_URL": endpoints.s3}


def cluster_env(endpoints: Endpoints) -> dict[str, str]:
    """The whole environment a Pitstop process of the cluster gets (besides its data dir)."""
    return {**settings_env(pitstop_settings(endpoints)), **s3_env(endpoints)}


# The commands, program first. The same argv runs on one machine (``pitstop`` and ``dask`` become
# ``python -m …``), in compose and in Helm.
def api_argv(host: str, port: int) -> list[str]:
    return ["pitstop", "serve", "--no-processor", "--host", host, "--port", str(port)]


def processor_argv() -> list[str]:
    return ["pitstop", "process"]


def init_argv() -> list[str]:
    """Migrate the ops DB and MLflow's store and make the lake's tables, once, before the rest."""
    return ["pitstop", "cluster", "init"]


def scheduler_argv(host: str, port: int) -> list[str]:
    return ["dask", "scheduler", "--host", host, "--port", str(port), "--no-dashboard"]


def worker_argv(scheduler: str, name: str | None = None) -> list[str]:
    argv = ["dask", "worker", scheduler, "--nthreads", "1", "--no-dashboard"]
    return [*argv, "--name", name] if name else argv


@dataclass(frozen=True)
class Service:
    name: str
    role: Role
    argv: tuple[str, ...]
    port: int | None = None


@dataclass(frozen=True)
class Topology:
    """The cluster on one machine: engines first, then the Pitstop processes and Dask."""

    api_servers: int = 2
    processors: int = 3
    dask_workers: int = 2
    base_port: int = 7400
    host: str = "127.0.0.1"

    @property
    def postgres_port(self) -> int:
        return self.base_port

    @property
    def s3_port(self) -> int:
        return self.base_port + 1

    @property
    def nats_port(self) -> int:
        return self.base_port + 2

    @property
    def dask_port(self) -> int:
        return self.base_port + 3

    def api_port(self, index: int) -> int:
        """The ``index``-th API server's port (from 1): base_port + 10, + 11, …"""
        return self.base_port + 9 + index

    def ports(self) -> list[int]:
        engines = [self.postgres_port, self.s3_port, self.nats_port, self.dask_port]
        return engines + [self.api_port(i) for i in range(1, self.api_servers + 1)]

    def endpoints(self) -> Endpoints:
        return Endpoints(
            postgres=f"{self.host}:{self.postgres_port}",
            s3=f"http://{self.host}:{self.s3_port}",
            nats=f"nats://{self.host}:{self.nats_port}",
        )

    def services(self) -> list[Service]:
        h = self.host
        scheduler = f"tcp://{h}:{self.dask_port}"
        found = [
            Service("postgres", "postgres", ("postgres", "-p", str(self.postgres_port)), self.postgres_port),
            Service("s3", "s3", ("moto_server", "-H", h, "-p", str(self.s3_port)), self.s3_port),
            Service("nats", "nats", ("nats-server", "-c", "nats.conf"), self.nats_port),
        ]
        for i in range(1, self.api_servers + 1):
            found.append(Service(f"api-{i}", "api", tuple(api_argv(h, self.api_port(i))), self.api_port(i)))
        for i in range(1, self.processors + 1):
            found.append(Service(f"processor-{i}", "processor", tuple(processor_argv())))
        found.append(
            Service(
                "dask-scheduler", "dask-scheduler", tuple(scheduler_argv(h, self.dask_port)), self.dask_port
            )
        )
        for i in range(1, self.dask_workers + 1):
            name = f"dask-worker-{i}"
            found.append(Service(name, "dask-worker", tuple(worker_argv(scheduler, name))))
        return found
