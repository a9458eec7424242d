from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pitstop import __version__
from pitstop.features import FeatureSpec
from pitstop.registry.bundle import ModelBundle
from pitstop.registry.mlflow_registry import DatasetRef
from pitstop.training.train import Progress, TrainResult, train_rul_model

if TYPE_CHECKING:
    from pitstop.platform import Platform


@dataclass
class RegisteredModel:
    version: str
    bundle: ModelBundle
    rows: int
    machines: int
    seconds: float
    lake_version: int


def default_spec(platform: Platform) -> FeatureSpec:
    return platform.fleet.feature_spec


@dataclass
class LakeTraining:
    """A model trained on a lake version, with what it needs to be registered."""

    result: TrainResult
    lineage: dict[str, str]
    datasets: list[DatasetRef]
    lake_version: int
    telemetry: pl.DataFrame
    events: pl.DataFrame


def train_on_lake(
    platform: Platform,
    *,
    lake_version: int | None = None,
    tune_trials: int = 0,
    exclude_machines: list[str] | None = None,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> LakeTraining:
    """Train on a lake version (default: newest), leaving out ``exclude_machines`` (a hold-out)."""
    s = platform.settings
    version = platform.lake.version("telemetry") if lake_version is None else lake_version
    events_version = platform.lake.version("events")
    spec = default_spec(platform)
    telemetry = platform.lake.read(
        "telemetry", version=version, columns=["machine_id", "ts", "seq", "bus_position", *spec.inputs]
    )
    events = platform.lake.read("events", version=events_version)
    if exclude_machines:
        telemetry = telemetry.filter(~pl.col("machine_id").is_in(exclude_machines))
        events = events.filter(~pl.col("machine_id").is_in(exclude_machines))
    result = train_rul_model(
        telemetry,
        events,
        spec,
        rul_cap=s.rul_cap,
        folds=s.train_folds,
        coverage=s.interval_coverage,
        seed=s.train_seed,
        params=params,
        tune_trials=tune_trials,
        interval_horizon=s.interval_horizon,
        failure_horizon=s.failure_horizon,
        progress=progress,
    )
    spec = result.bundle.spec  # with its fitted regimes, if any
    lineage = {
        "lake_table": "telemetry",
        "lake_version": str(version),
        "events_version": str(events_version),
        "feature_spec_hash": spec.hash,
        "code_revision": code_revision(),
        "seed": str(s.train_seed),
    }
    if exclude_machines:
        held = json.dumps(sorted(exclude_machines))
        lineage["held_out"] = held if len(held) < 4000 else json.dumps([])  # MLflow tags are short
    lake = platform.lake
    datasets = [
        DatasetRef("telemetry", lake.path("telemetry"), version, telemetry.height, telemetry.columns),
        DatasetRef("events", lake.path("events"), events_version, events.height, events.columns),
    ]
    return LakeTraining(result, lineage, datasets, version, telemetry, events)


def register(
    platform: Platform, trained: LakeTraining, alias: str | None, actor: str = "training"
) -> RegisteredModel:
    """Log a lake training to MLflow, register it, optionally set an alias; audited."""
    result = trained.result
    texts = {"tuning.json": json.dumps(result.tuning, indent=2)} if result.tuning else None
    model_version = platform.registry.log_and_register(
        result.bundle, lineage=trained.lineage, datasets=trained.datasets, texts=texts
    )
    if alias:
        platform.registry.set_alias(alias, model_version)
    platform.db.audit(
        actor,
        "model_registered",
        version=model_version,
        alias=alias,
        **trained.lineage,
        metrics=result.bundle.metrics,
    )
    return RegisteredModel(
        model_version, result.bundle, result.rows, result.machines, result.seconds, trained.lake_version
    )


def train_and_register(
    platform: Platform,
    *,
    alias: str | None = "champion",
    lake_version: int | None = None,
    tune_trials: int = 0,
    progress: Progress | None = None,
) -> RegisteredModel:
    """Train on a lake version (default: newest), log to MLflow, register, optionally set an alias."""
    trained = train_on_lake(platform, lake_version=lake_version, tune_trials=tune_trials, progress=progress)
    return register(platform, trained, alias)


def code_revision() -> str:
    """The git commit of the checkout Pitstop runs from, else the package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"pitstop-{__version__}"
