from __future__ import annotations

import polars as pl

from pitstop.features.spec import FeatureSpec


def build_features(telemetry: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Features for every reading, point-in-time correct: row t uses only readings with seq <= t.

    Returns ``machine_id, ts, seq`` and ``spec.names``, sorted by machine and seq.
    """
    missing = [s for s in spec.sensors if s not in telemetry.columns]
    if missing:
        raise ValueError(f"telemetry lacks sensors the feature spec needs: {missing}")
    frame = telemetry.select("machine_id", "ts", "seq", *spec.sensors).sort("machine_id", "seq")
    idx = pl.int_range(pl.len()).over("machine_id")
    k = spec.baseline_readings
    exprs: list[pl.Expr] = [(idx + 1).cast(pl.Float64).alias("age")]
    for s in spec.sensors:
        x = pl.col(s).cast(pl.Float64)
        exprs.append(x.alias(f"{s}__last"))
        for w in spec.mean_windows:
            exprs.append(x.rolling_mean(w, min_samples=1).over("machine_id").alias(f"{s}__mean_{w}"))
        for w in spec.std_windows:
            exprs.append(x.rolling_std(w, min_samples=1, ddof=0).over("machine_id").alias(f"{s}__std_{w}"))
        baseline = pl.when(idx < k).then(x).otherwise(0.0).cum_sum().over("machine_id") / (
            pl.min_horizontal(idx + 1, pl.lit(k)).cast(pl.Float64)
        )
        drift_mean = x.rolling_mean(spec.drift_window, min_samples=1).over("machine_id")
        exprs.append((drift_mean - baseline).alias(f"{s}__drift"))
    return frame.select("machine_id", "ts", "seq", *exprs)
