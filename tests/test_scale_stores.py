"""Scale-out stores: MLflow on PostgreSQL with artifacts on S3, the lake on S3, one Platform on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import boto3
import polars as pl
import pyarrow as pa
import pytest

from pitstop.cluster.s3 import create_bucket
from pitstop.config import Settings
from pitstop.errors import ArtifactIntegrityError
from pitstop.ingest.devices import DeviceRegistry
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.processor.processor import CONSUMER
from pitstop.sim import shipped
from pitstop.training import train_and_register
from pitstop.training.cmapss import failures, telemetry
from tests.conftest import make_settings
from tests.test_processor import publish


def _remote_settings(
    data_dir: Path, postgres: Any, s3_endpoint: str, *, ops_on_postgres: bool = False
) -> Settings:
    bucket = f"pitstop-{uuid4().hex[:10]}"
    create_bucket(s3_endpoint, bucket)
    extra = {"ops_db_url": postgres.create_database(f"t{uuid4().hex[:12]}")} if ops_on_postgres else {}
    return make_settings(
        data_dir,
        mlflow_tracking_uri=postgres.create_database(f"t{uuid4().hex[:12]}"),
        mlflow_artifacts_uri=f"s3://{bucket}/mlflow",
        lake_uri=f"s3://{bucket}/lake",
        s3_endpoint_url=s3_endpoint,
        **extra,
    )


def _seed(platform: Platform, units: int = 6) -> None:
    """A few C-MAPSS trajectories run to failure, straight into the lake (the smallest real training)."""
    train = telemetry(shipped("fd001_train").filter(pl.col("unit") <= units), "u")
    frame = train.with_columns(
        pl.col("ts").dt.date().alias("day"), pl.lit(None, pl.Int64).alias("bus_position")
    )
    platform.lake.append("telemetry", frame.to_arrow(), app_id="seed", position=1)
    events = failures(train).with_columns(pl.lit("run to failure").alias("detail"))
    platform.lake.append("events", pa.Table.from_pylist(events.to_dicts()), app_id="seed", position=1)


def _s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint)


def test_models_train_register_and_load_with_mlflow_on_postgres_and_s3(
    tmp_path: Path, postgres: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)  # the registry sets it from settings
    settings = _remote_settings(tmp_path / "data", postgres, s3_endpoint)
    platform = Platform.open(settings)
    try:
        _seed(platform)
        result = train_and_register(platform, alias="champion")
        registry = platform.registry
        [version] = registry.versions()
        assert version["aliases"] == ["champion"] and version["version"] == result.version
        assert version["tags"]["pitstop.lake_version"] == str(platform.lake.version("telemetry"))
        run = registry.client.get_run(version["run_id"])
        assert run.info.artifact_uri.startswith(settings.mlflow_artifacts_uri)
        sources = {d.dataset.name: d.dataset.source for d in run.inputs.dataset_inputs}
        assert any(settings.lake_uri in source for source in sources.values())  # lineage names the S3 table
    finally:
        platform.close()

    # a fresh platform (as another process would) loads the champion from S3, verified
    again = Platform.open(settings)
    try:
        again.scorer.reload()
        assert again.scorer.model.version == result.version and not again.scorer.from_cache
        # an artifact altered in the bucket is refused
        bucket, prefix = run.info.artifact_uri.removeprefix("s3://").split("/", 1)
        key = f"{prefix}/model/model.txt"
        s3 = _s3(s3_endpoint)
        body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        body[len(body) // 2] ^= 0x01
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
        with pytest.raises(ArtifactIntegrityError, match="altered"):
            again.registry.load_version(result.version)
    finally:
        again.close()

    # MLflow's database unreachable: the champion cached under state/models still serves
    import mlflow.store.db.utils

    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)  # MLflow's own retries, shortened
    dead = settings.model_copy(
        update={"mlflow_tracking_uri": "postgresql+psycopg://pitstop@127.0.0.1:9/none"}
    )
    offline = Platform.open(dead)
    try:
        proc = Processor(offline)
        proc.bootstrap()
        assert offline.scorer.from_cache and offline.scorer.model.version == result.version
    finally:
        offline.close()


def test_a_whole_platform_on_postgres_and_s3_writes_processed_readings_to_the_s3_lake(
    tmp_path: Path, postgres: Any, s3_endpoint: str
) -> None:
    settings = _remote_settings(tmp_path / "data", postgres, s3_endpoint, ops_on_postgres=True)
    platform = Platform.open(settings)
    try:
        devices = DeviceRegistry(platform.db)
        for machine in ("eng-001", "eng-002"):  # as intake requires (PostgreSQL enforces the foreign keys)
            devices.add(machine, "turbofan", platform.fleet)
        publish(platform, "eng-001", 1, 0, 12)
        publish(platform, "eng-002", 2, 0, 8)
        proc = Processor(platform)
        proc.bootstrap()
        proc.run_once()
    finally:
        platform.close()
    # read back through a new handle on the bucket: the rows are in S3, not in the data dir
    assert not (tmp_path / "data" / "lake").exists()
    reopened = Platform.open(settings)
    try:
        rows = reopened.lake.read("telemetry", columns=["machine_id", "seq"])
        assert rows.group_by("machine_id").len().sort("machine_id").rows() == [
            ("eng-001", 12),
            ("eng-002", 8),
        ]
        assert reopened.lake.committed_position(CONSUMER) > 0
    finally:
        reopened.close()


@pytest.mark.parametrize("verb", ["backup", "restore"])
def test_backup_and_restore_refuse_stores_outside_the_data_dir_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    from click.testing import CliRunner

    from pitstop.cli import cli

    monkeypatch.setenv("PITSTOP_LAKE_URI", "s3://fleet-lake/pitstop")
    monkeypatch.setenv("PITSTOP_MLFLOW_ARTIFACTS_URI", "s3://fleet-models/mlflow")
    (tmp_path / "backup").mkdir()
    result = CliRunner().invoke(cli, [verb, str(tmp_path / "backup"), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "error [backup_remote_store]" in line and "s3://fleet-lake/pitstop" in line
    assert "versioning" in line and "s3://fleet-models/mlflow" in line
    assert not (tmp_path / "data").exists()
