from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pitstop import __version__
from pitstop.features import FeatureSpec
from pitstop.registry.bundle import ModelBundle
from pitstop.registry.mlflow_registry import DatasetRef
from pitstop.training.train import Progress, train_rul_model

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


def train_and_register(
    platform: Platform,
    *,
    alias: str | None = "champion",
    lake_version: int | None = None,
    tune_trials: int = 0,
    progress: Progress | None = None,
) -> RegisteredModel:
    """Train on a lake version (default: newest), log to MLflow, register, optionally set an alias."""
    s = platform.settings
    version = platform.lake.version("telemetry") if lake_version is None else lake_version
    events_version = platform.lake.version("events")
    spec = default_spec(platform)
    telemetry = platform.lake.read(
        "telemetry", version=version, columns=["machine_id", "ts", "seq", "bus_position", *spec.inputs]
    )
    events = platform.lake.read("events", version=events_version)
    result = train_rul_model(
        telemetry,
        events,
        spec,
        rul_cap=s.rul_cap,
        folds=s.train_folds,
        coverage=s.interval_coverage,
        seed=s.train_seed,
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
    lake = platform.lake
    datasets = [
        DatasetRef("telemetry", lake.path("telemetry"), version, telemetry.height, telemetry.columns),
        DatasetRef("events", lake.path("events"), events_version, events.height, events.columns),
    ]
    texts = {"tuning.json": json.dumps(result.tuning, indent=2)} if result.tuning else None
    model_version = platform.registry.log_and_register(
        result.bundle, lineage=lineage, datasets=datasets, texts=texts
    )
    if alias:
        platform.registry.set_alias(alias, model_version)
    platform.db.audit(
        "training",
        "model_registered",
        version=model_version,
        alias=alias,
        **lineage,
        metrics=result.bundle.metrics,
    )
    return RegisteredModel(
        model_version, result.bundle, result.rows, result.machines, result.seconds, version
    )


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
