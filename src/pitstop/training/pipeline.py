from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from sqlalchemy import select

from pitstop import __version__
from pitstop.features import FeatureSpec
from pitstop.registry.bundle import ModelBundle
from pitstop.registry.card import DatasetRef
from pitstop.schema import MachineType
from pitstop.store import Machine
from pitstop.training.train import Progress, TrainResult, train_rul_model
from pitstop.training.validation import ValidationReport, report_texts, validate_dataset

if TYPE_CHECKING:
    from distributed import Client

    from pitstop.config import Settings
    from pitstop.platform import Platform


@dataclass
class RegisteredModel:
    version: str
    bundle: ModelBundle
    rows: int
    machines: int
    seconds: float
    lake_version: int


@dataclass(frozen=True)
class TypeTargets:
    """What a machine type's model is trained for, in the type's time unit."""

    rul_cap: float
    interval_horizon: float
    failure_horizon: float
    unit_seconds: float | None  # None: readings (cycles)
    derived: bool  # the cap came from the data (no rul_cap in the fleet file)


# A derived cap only trims the longest lives: the 95th percentile of the observed ones. Capping
# lower (C-MAPSS's 125 cycles is 0.6 of FD001's median life) sharpens the model near failure but
# makes it predict the cap for every healthy machine, and a machine seen early in its life then
# costs the whole difference: on the synthetic pump fleet of tests/pumpfleet.py, machines cut at a
# random point of their life, RMSE 234 h with the cap at 0.6 of the median life against 154 h at
# the 95th percentile (and 227 h for LightGBM on rolling means with uncapped labels).
CAP_LIFE_QUANTILE = 0.95
FAILURE_HORIZON_SHARE = 0.15  # of the median life (C-MAPSS FD001: 30 of 199 cycles)


def type_targets(
    mt: MachineType, settings: Settings, telemetry: pl.DataFrame, events: pl.DataFrame
) -> TypeTargets:
    """The cap and horizons of ``mt``: from its fleet file; else for a type counted in readings the
    settings (``rul_cap``, ``interval_horizon``, ``failure_horizon``); else derived from the
    observed lives (time from a machine's start or last reset to its failure)."""
    unit = mt.unit_seconds
    if mt.rul_cap is not None or unit is None:
        cap = mt.rul_cap if mt.rul_cap is not None else float(settings.rul_cap)
        interval = mt.interval_horizon or (settings.interval_horizon if unit is None else 1.2 * cap)
        failure = mt.failure_horizon or (settings.failure_horizon if unit is None else 0.24 * cap)
        return TypeTargets(cap, interval, failure, unit, False)
    lives = observed_lives(telemetry, events, unit)
    if lives is None:
        raise ValueError(
            f"machine type {mt.name}: no failure with history before it to derive the RUL cap from; "
            "import failure events (pitstop import events) or set rul_cap in the fleet file"
        )
    cap = float(np.round(np.quantile(lives, CAP_LIFE_QUANTILE), 3))
    failure = float(np.round(FAILURE_HORIZON_SHARE * np.median(lives), 3))
    return TypeTargets(cap, mt.interval_horizon or cap, mt.failure_horizon or failure, unit, True)


def observed_lives(telemetry: pl.DataFrame, events: pl.DataFrame, unit_seconds: float) -> np.ndarray | None:
    """Each failure's life (in units): from the machine's first reading or last reset event to it."""
    if events.height == 0 or telemetry.height == 0:
        return None
    ends = events.filter(pl.col("kind").is_in(["failure", "maintenance"])).select(
        "machine_id", pl.col("ts").cast(pl.Datetime("us", "UTC")), "kind"
    )
    first = telemetry.group_by("machine_id").agg(
        pl.col("ts").cast(pl.Datetime("us", "UTC")).min().alias("ts")
    )
    starts = pl.concat([first.with_columns(pl.lit("start").alias("kind")), ends]).sort("machine_id", "ts")
    lives = starts.with_columns(
        pl.col("ts").shift(1).over("machine_id").alias("began"),
    ).filter((pl.col("kind") == "failure") & pl.col("began").is_not_null())
    if lives.height == 0:
        return None
    seconds = (lives["ts"] - lives["began"]).dt.total_microseconds().to_numpy() / 1e6
    seconds = seconds[seconds > 0]
    return seconds / unit_seconds if len(seconds) else None


def type_spec(mt: MachineType, telemetry: pl.DataFrame, seed: int) -> FeatureSpec:
    """The type's feature spec for this data: with ``regimes = "auto"``, the operating regimes its
    setting sensors show (``detect_regimes``); settings that vary continuously instead of in
    regimes become features like any sensor (for a type without an explicit feature table)."""
    from pitstop.features.offline import detect_regimes

    spec = mt.feature_spec
    if not mt.settings:
        return spec
    if isinstance(mt.regimes, int):
        return replace(spec, regime_count=mt.regimes)
    k = detect_regimes(telemetry, mt.settings, seed=seed)
    if k > 1:
        return replace(spec, regime_count=k)
    if mt.features is None:
        return replace(spec, sensors=(*spec.sensors, *mt.settings), regime_settings=(), regime_count=0)
    return spec


def training_options(mt: MachineType, settings: Settings, targets: TypeTargets, seed: int) -> dict[str, Any]:
    """``train_rul_model``'s keyword arguments for a machine type, from the settings and the
    type's targets (cap, horizons, time unit)."""
    return {
        "rul_cap": targets.rul_cap,
        "folds": settings.train_folds,
        "coverage": settings.interval_coverage,
        "seed": seed,
        "interval_horizon": targets.interval_horizon,
        "failure_horizon": targets.failure_horizon,
        "unit_seconds": targets.unit_seconds,
        "optional": frozenset(set(mt.sensor_names) - mt.required),
    }


def machines_of_type(platform: Platform, machine_type: str) -> list[str] | None:
    """Registered machines of a type; None when the fleet has one type (then every machine)."""
    if len(platform.fleet.machine_types) == 1:
        return None
    with platform.db.session() as s:
        return list(s.scalars(select(Machine.machine_id).where(Machine.machine_type == machine_type)))


@dataclass
class LakeTraining:
    """A model trained on a lake version, with what it needs to be registered."""

    result: TrainResult
    lineage: dict[str, str]
    datasets: list[DatasetRef]
    lake_version: int
    telemetry: pl.DataFrame
    events: pl.DataFrame
    machine_type: str = ""
    validation: ValidationReport | None = None  # kept with the run: validation/report.{json,html}


def train_on_lake(
    platform: Platform,
    *,
    lake_version: int | None = None,
    tune_trials: int = 0,
    exclude_machines: list[str] | None = None,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    machine_type: str | None = None,
    dask: Client | None = None,
) -> LakeTraining:
    """Train the model of one machine type (default: the fleet's first) on a lake version (default:
    newest), on the type's machines, leaving out ``exclude_machines`` (a hold-out). With a
    ``dask`` client, features and models are computed on its workers (``on_dask``): the same
    model, recorded with ``compute: dask`` in its lineage."""
    s = platform.settings
    mt = platform.fleet.type_of(machine_type or next(iter(platform.fleet.machine_types)))
    version = platform.lake.version("telemetry") if lake_version is None else lake_version
    events_version = platform.lake.version("events")
    columns = ["machine_id", "ts", "seq", "bus_position", *mt.sensor_names]
    members = machines_of_type(platform, mt.name)
    telemetry = platform.lake.read("telemetry", version=version, columns=columns, machine_ids=members)
    events = platform.lake.read("events", version=events_version, machine_ids=members)
    if members is not None and not members:
        raise ValueError(f"no machines of type {mt.name} yet: import their readings first")
    if exclude_machines:
        telemetry = telemetry.filter(~pl.col("machine_id").is_in(exclude_machines))
        events = events.filter(~pl.col("machine_id").is_in(exclude_machines))
    validation = training_set_report(mt, s, telemetry, events)
    targets = type_targets(mt, s, telemetry, events)
    spec = type_spec(mt, telemetry, s.train_seed)
    options = training_options(mt, s, targets, s.train_seed) | {"params": params, "progress": progress}
    if dask is None:
        result = train_rul_model(telemetry, events, spec, tune_trials=tune_trials, **options)
    else:
        from pitstop.training.dask_parts import LakeSource
        from pitstop.training.on_dask import train_rul_model_dask

        if tune_trials:
            raise ValueError("tuning runs single-node: train with --tune, or on Dask without it")
        lake = platform.lake
        source = LakeSource(
            lake.path("telemetry"),
            version,
            lake.path("events"),
            events_version,
            tuple(columns),
            lake.location.storage_options,
        )
        result = train_rul_model_dask(dask, source, telemetry, spec, **options)
    spec = result.bundle.spec  # with its fitted regimes, if any
    lineage = {
        "machine_type": mt.name,
        "time_unit": mt.time_unit,
        "rul_cap_derived": str(targets.derived),
        "lake_table": "telemetry",
        "lake_version": str(version),
        "events_version": str(events_version),
        "feature_spec_hash": spec.hash,
        "code_revision": code_revision(),
        "pitstop_version": __version__,
        "seed": str(s.train_seed),
    }
    if dask is not None:
        lineage["compute"] = "dask"
        lineage["dask_workers"] = str(len(dask.scheduler_info()["workers"]))
    if exclude_machines:
        held = json.dumps(sorted(exclude_machines))
        lineage["held_out"] = held if len(held) < 4000 else json.dumps([])  # MLflow tags are short
    lake = platform.lake
    datasets = [
        DatasetRef("telemetry", lake.path("telemetry"), version, telemetry.height, telemetry.columns),
        DatasetRef("events", lake.path("events"), events_version, events.height, events.columns),
    ]
    return LakeTraining(result, lineage, datasets, version, telemetry, events, mt.name, validation)


def training_set_report(
    mt: MachineType, settings: Settings, telemetry: pl.DataFrame, events: pl.DataFrame
) -> ValidationReport:
    """The validation report of a training set; raises when a problem makes training impossible
    (the others are only reported)."""
    cap = (
        mt.rul_cap if mt.rul_cap is not None else float(settings.rul_cap) if mt.unit_seconds is None else None
    )
    report = validate_dataset(telemetry, events, mt, dataset="training", rul_cap=cap)
    if not report.trainable:
        blocking = "; ".join(p.message for p in report.problems if p.blocking)
        raise ValueError(f"machine type {mt.name}: the training set cannot be trained on: {blocking}")
    return report


def register(
    platform: Platform,
    trained: LakeTraining,
    alias: str | None,
    actor: str = "training",
    version_tags: dict[str, str] | None = None,
) -> RegisteredModel:
    """Log a lake training to MLflow, register it (with ``version_tags`` from the start),
    optionally set an alias; audited."""
    result = trained.result
    texts = {"tuning.json": json.dumps(result.tuning, indent=2)} if result.tuning else {}
    if trained.validation is not None:
        texts |= report_texts(trained.validation)
    registry = platform.registry_for(trained.machine_type) if trained.machine_type else platform.registry
    model_version = registry.log_and_register(
        result.bundle,
        lineage=trained.lineage,
        datasets=trained.datasets,
        texts=texts,
        version_tags=version_tags,
    )
    if alias:
        registry.set_alias(alias, model_version)
    platform.db.audit(
        actor,
        "model_registered",
        model=registry.model_name,
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
    machine_type: str | None = None,
    dask: Client | None = None,
) -> RegisteredModel:
    """Train a machine type's model (default: the fleet's first type) on a lake version (default:
    newest), log to MLflow, register it under the type's model name, optionally set an alias."""
    trained = train_on_lake(
        platform,
        lake_version=lake_version,
        tune_trials=tune_trials,
        progress=progress,
        machine_type=machine_type,
        dask=dask,
    )
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
