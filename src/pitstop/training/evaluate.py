"""Score a model on held-out machines from raw readings: features at each machine's last reading,
compared with the true RUL (and the failing component) the user gives.

The readings never touch the lake. Truth is ``machine_id,rul[,component]``, RUL in the machine
type's time unit after the machine's last reading in the readings file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pitstop.features import build_features
from pitstop.registry.bundle import ModelBundle


def read_frame(path: Path) -> pl.DataFrame:
    """A CSV or Parquet file (by extension) as a frame; ``ts`` as UTC microseconds when present."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix == ".csv":
            frame = pl.read_csv(path, infer_schema_length=10_000)
        else:
            raise ValueError(f"{path}: use a .csv or .parquet file")
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if "machine_id" in frame.columns:
        frame = frame.with_columns(pl.col("machine_id").cast(pl.String))
    if "ts" in frame.columns:
        ts = frame["ts"]
        try:
            if ts.dtype == pl.String:
                ts = ts.str.to_datetime(time_zone="UTC", time_unit="us")
            elif isinstance(ts.dtype, pl.Datetime):
                ts = (
                    ts.dt.replace_time_zone("UTC")
                    if ts.dtype.time_zone is None
                    else ts.dt.convert_time_zone("UTC")
                )
            else:
                raise ValueError(f"column ts has type {ts.dtype}")
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise ValueError(f"{path}: ts must be ISO-8601 timestamps with a zone: {exc}") from None
        frame = frame.with_columns(ts.dt.cast_time_unit("us").alias("ts"))
    return frame


def evaluate_readings(
    bundle: ModelBundle, readings: pl.DataFrame, truth: pl.DataFrame, naive: float | None = None
) -> dict[str, Any]:
    """``bundle`` at each machine's last reading of ``readings`` (``machine_id, ts``, the inputs)
    against ``truth`` (``machine_id, rul[, component]``). ``naive``: a constant prediction reported
    beside (the mean training label), so a model can be told from no model."""
    missing = [c for c in ("machine_id", "ts", *bundle.spec.inputs) if c not in readings.columns]
    optional_ok = set(bundle.spec.inputs) if bundle.spec.fill is not None else set()
    missing = [c for c in missing if c not in optional_ok]
    if missing:
        raise ValueError(f"the readings lack columns the model needs: {missing}")
    for column in ("machine_id", "rul"):
        if column not in truth.columns:
            raise ValueError(f"the truth file needs a {column} column (machine_id,rul[,component])")
    if not truth["rul"].dtype.is_numeric():
        raise ValueError("the truth file's rul column must be numbers (time to failure, the type's unit)")
    frame = readings.with_columns(
        pl.col(c).cast(pl.Float64) if c in readings.columns else pl.lit(None, pl.Float64).alias(c)
        for c in bundle.spec.inputs
    ).sort("machine_id", "ts")
    if "seq" not in frame.columns:
        frame = frame.with_columns(pl.int_range(1, pl.len() + 1).over("machine_id").alias("seq"))
    last = (
        build_features(frame, bundle.spec)
        .group_by("machine_id")
        .agg(pl.all().sort_by("seq").last())
        .join(truth.with_columns(pl.col("machine_id").cast(pl.String)), on="machine_id", how="inner")
        .sort("machine_id")
    )
    if last.height == 0:
        raise ValueError("no machine of the readings has a true RUL in the truth file")
    X = last.select(bundle.spec.names).to_numpy()
    rul, lower, upper = bundle.predict(X)
    y = last["rul"].cast(pl.Float64).to_numpy()
    d = rul - y
    out: dict[str, Any] = {
        "rmse": float(np.sqrt(np.mean(d**2))),
        "mae": float(np.mean(np.abs(d))),
        "interval_coverage": float(np.mean((y >= lower) & (y <= upper))),
        "interval_width": float(np.mean(upper - lower)),
        "n": last.height,
    }
    if bundle.rul_cap:
        capped = np.minimum(y, bundle.rul_cap)
        out["rmse_capped"] = float(np.sqrt(np.mean((rul - capped) ** 2)))
    if naive is not None:
        out["naive_rmse"] = float(np.sqrt(np.mean((naive - y) ** 2)))
    if "component" in last.columns:
        named = last["component"].cast(pl.String).fill_null("").to_numpy().astype(str)
        likely = bundle.likely_component(X)
        known = named != ""
        if likely is not None and known.any():
            guessed = np.array([c for c, _ in likely])
            out["component_accuracy"] = float(np.mean(guessed[known] == named[known]))
            out["component_n"] = int(known.sum())
        elif known.any():
            out["component_accuracy"] = None  # the model was trained without named failures
    return out


def naive_prediction(bundle: ModelBundle) -> float | None:
    """The mean training label, kept in the model's metrics (None for older models)."""
    value = bundle.metrics.get("train_rul_mean")
    return float(value) if value is not None else None
