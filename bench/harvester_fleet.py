"""Shared by the feature-store, memory and scale benchmarks: a harvester fleet of any size and the
feature spec its champion would have.

The harvester simulator (``pitstop.sim.harvester``) costs about 2 ms per machine-day, too slow for
10,000 machines; ``fleet_readings`` simulates ``base`` machines and tiles them under new ids, each
copy's sensor values jittered (0.5 %) so no two machines are equal. ``champion_spec`` is the
shipped fleet's harvester spec fitted to the readings as training fits it (regimes, fill values).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from pitstop.features import FeatureSpec
from pitstop.schema import shipped_fleet
from pitstop.schema.fleet import MachineType
from pitstop.sim.harvester import simulate
from pitstop.training.pipeline import type_spec
from pitstop.training.train import fit_spec

START = datetime(2026, 3, 1, tzinfo=UTC)


def harvester_type() -> MachineType:
    return shipped_fleet("harvesters").type_of("harvester")


def fleet_readings(machines: int, days: float, *, base: int = 24, seed: int = 7) -> pl.DataFrame:
    """``machines`` harvesters' readings over ``days`` (machine_id, ts, seq, sensors, settings),
    grouped by machine in time order."""
    mt = harvester_type()
    base = min(base, machines)
    sim = simulate(base, days, seed=seed, start=START, prefix="B-").readings
    sim = sim.sort("machine_id", "ts").with_columns(seq=pl.int_range(1, pl.len() + 1).over("machine_id"))
    base_ids = sim["machine_id"].unique(maintain_order=True).to_list()
    sensors = [s for s in mt.sensor_names if s in sim.columns and s not in mt.settings]
    rng = np.random.default_rng(seed)
    copies = []
    for copy in range(-(-machines // len(base_ids))):
        names = {b: f"H-{copy * len(base_ids) + i:05d}" for i, b in enumerate(base_ids)}
        jitter = 1.0 + rng.normal(0.0, 0.005, (sim.height, len(sensors))) if copy else None
        frame = sim.with_columns(pl.col("machine_id").replace_strict(names))
        if jitter is not None:
            frame = frame.with_columns(
                (pl.col(s) * pl.Series(jitter[:, i])).alias(s) for i, s in enumerate(sensors)
            )
        copies.append(frame)
    out = pl.concat(copies)
    keep = out["machine_id"].unique().sort().head(machines)
    return out.filter(pl.col("machine_id").is_in(keep.implode())).sort("machine_id", "seq")


def champion_spec(readings: pl.DataFrame, seed: int = 7) -> FeatureSpec:
    """The spec a harvester champion trained on ``readings`` would carry."""
    mt = harvester_type()
    optional = frozenset(set(mt.sensor_names) - mt.required)
    return fit_spec(readings, type_spec(mt, readings, seed), seed, optional)


def inputs_matrix(readings: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
    cols = [pl.col(c) if c in readings.columns else pl.lit(None, pl.Float64).alias(c) for c in spec.inputs]
    return readings.select(cols).cast(pl.Float64).to_numpy()
