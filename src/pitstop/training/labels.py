from __future__ import annotations

import polars as pl


def rul_labels(features: pl.DataFrame, events: pl.DataFrame, cap: float | None) -> pl.DataFrame:
    """Join RUL = seq of the machine's next failure − seq to each row (capped at ``cap``).

    Rows after a machine's last failure, and machines that never failed, are censored: their RUL is
    unknown, so they are dropped here (the column ``rul_uncapped`` keeps the true value).
    """
    failures = (
        events.filter(pl.col("kind") == "failure")
        .select("machine_id", pl.col("seq").alias("failure_seq"))
        .drop_nulls()
        .sort("machine_id", "failure_seq")
    )
    joined = features.sort("machine_id", "seq").join_asof(
        failures,
        left_on="seq",
        right_on="failure_seq",
        by="machine_id",
        strategy="forward",
        check_sortedness=False,  # both sides sorted just above
    )
    rul = (pl.col("failure_seq") - pl.col("seq")).cast(pl.Float64)
    return (
        joined.filter(pl.col("failure_seq").is_not_null())
        .with_columns(rul.alias("rul_uncapped"))
        .with_columns(
            (pl.col("rul_uncapped").clip(upper_bound=cap) if cap else pl.col("rul_uncapped")).alias("rul")
        )
        .drop("failure_seq")
    )
