"""Training labels from events: remaining useful life and failure within a horizon.

Time is in the machine type's unit: readings (``seq``) for a type counted in cycles (as C-MAPSS
counts them), else the time between timestamps in the type's unit (``unit_seconds`` seconds; hours
for the harvesters), so that sampling may be irregular with gaps of downtime. Each row looks
forward to the first ``failure`` or ``maintenance`` event of its machine stamped at or after it:

- a failure: the row's RUL is known, ``failure seq - seq`` (0 at the failing reading), or
  ``failure ts - ts`` in time units;
- a maintenance, or no event yet: the row is *censored*. The machine was still running
  ``event seq - seq`` (or ``last seq - seq``) readings later (or that long in time units: to the
  event, or to its last reading), so that much is a lower bound on the
  RUL, and the true value is unknown. If the bound reaches the cap, the capped RUL is known all
  the same (it is the cap) and the row is kept; otherwise it is dropped, because any label would
  be a guess. Likewise ``fails_within`` is false for a censored row whose bound reaches the
  horizon, and unknown (null) below it.

An event without a ``seq`` is placed at the machine's last reading stamped at or before it.
"""

from __future__ import annotations

import polars as pl

ENDS = ("failure", "maintenance")


def rul_labels(
    features: pl.DataFrame,
    events: pl.DataFrame,
    cap: float | None,
    horizon: float = 30,
    unit_seconds: float | None = None,
) -> pl.DataFrame:
    """``features`` (``machine_id, ts, seq, ...``) joined with labels: ``rul`` (capped at ``cap``),
    ``rul_uncapped`` (null when censored), ``censored``, ``rul_bound`` (time seen alive after
    the row, for censored rows), ``fails_within`` (``horizon``) and ``failure_component`` (the
    component the coming failure event names, if any). Time is in readings, or in
    units of ``unit_seconds`` seconds when given. Rows whose capped RUL cannot be known are
    dropped."""
    rows = features.sort("machine_id", "ts", "seq")
    ends = _event_seqs(rows, events)
    joined = rows.join_asof(
        ends, left_on="ts", right_on="_event_ts", by="machine_id", strategy="forward", check_sortedness=False
    )
    if unit_seconds is None:
        last_seq = pl.col("seq").max().over("machine_id")
        to_event = (pl.coalesce(pl.col("_event_seq"), last_seq) - pl.col("seq")).cast(pl.Float64)
    else:
        ts = pl.col("ts").cast(pl.Datetime("us", "UTC"))
        until = pl.coalesce(pl.col("_event_ts"), ts.max().over("machine_id"))
        to_event = (until - ts).dt.total_microseconds().cast(pl.Float64) / (unit_seconds * 1e6)
    failed = pl.col("_event_kind") == "failure"
    labelled = joined.with_columns(
        censored=~failed.fill_null(False),
        rul_uncapped=pl.when(failed).then(to_event),
        rul_bound=pl.when(failed).then(None).otherwise(to_event),
    )
    capped = pl.col("rul_uncapped").clip(upper_bound=cap) if cap else pl.col("rul_uncapped")
    censored_known = pl.col("censored") & (pl.col("rul_bound") >= cap) if cap else pl.lit(False)
    fails_within = (
        pl.when(~pl.col("censored"))
        .then(pl.col("rul_uncapped") <= horizon)
        .when(pl.col("rul_bound") >= horizon)
        .then(False)
    )
    return (
        labelled.with_columns(
            rul=pl.when(censored_known).then(pl.lit(cap, pl.Float64)).otherwise(capped),
            fails_within=fails_within,
        )
        .filter(pl.col("rul").is_not_null())
        .with_columns(failure_component=pl.when(failed).then(pl.col("_event_component")).otherwise(None))
        .drop("_event_ts", "_event_seq", "_event_kind", "_event_component")
        .sort("machine_id", "seq")
    )


def _event_seqs(rows: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Failure and maintenance events with the seq they happened at (``_event_ts, _event_seq,
    _event_kind``), sorted for an as-of join."""
    if events.height == 0:
        return pl.DataFrame(
            schema={
                "machine_id": pl.String,
                "_event_ts": pl.Datetime("us", "UTC"),
                "_event_kind": pl.String,
                "_event_seq": pl.Int64,
                "_event_component": pl.String,
            }
        )
    ends = events.filter(pl.col("kind").is_in(ENDS)).select(
        "machine_id",
        pl.col("ts").cast(pl.Datetime("us", "UTC")).alias("_event_ts"),
        pl.col("kind").alias("_event_kind"),
        (pl.col("seq") if "seq" in events.columns else pl.lit(None)).cast(pl.Int64).alias("_given_seq"),
        (pl.col("component") if "component" in events.columns else pl.lit(None))
        .cast(pl.String)
        .alias("_event_component"),
    )
    readings = rows.select("machine_id", pl.col("ts").cast(pl.Datetime("us", "UTC")), "seq")
    placed = ends.sort("machine_id", "_event_ts").join_asof(
        readings.sort("machine_id", "ts"),
        left_on="_event_ts",
        right_on="ts",
        by="machine_id",
        strategy="backward",
        check_sortedness=False,
    )
    return (
        placed.select(
            "machine_id",
            "_event_ts",
            "_event_kind",
            pl.coalesce("_given_seq", "seq").alias("_event_seq"),
            "_event_component",
        )
        .drop_nulls("_event_seq")
        .sort("machine_id", "_event_ts")
    )
