"""Validate a dataset (a machine type's readings, its events and the type's schema) before it is
trained on or after it is imported: schema, ranges, gaps and label sanity, with a verdict (ok,
warnings, errors). Only problems that make training impossible are ``blocking``; the others are
reported and training goes on. Every training run and every import keeps the report with its MLflow
run (``validation/report.json`` and ``validation/report.html``).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pitstop.schema import MachineType
from pitstop.training.labels import rul_labels
from pitstop.training.validation_report import Problem, ValidationReport

__all__ = ["Problem", "ValidationReport", "report_texts", "validate_dataset"]

KEYS = {"machine_id": "string", "ts": "datetime", "seq": "integer"}
EVENT_KEYS = ("machine_id", "ts", "kind")
GAP_FACTOR = 5.0  # an interval this many times its machine's median one is a time gap
GAP_SHARE = 0.05  # more of a machine type's intervals than this being gaps is a warning
MOSTLY_MISSING = 0.5
TOP = 20  # machines listed per table


def validate_dataset(
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    machine_type: MachineType,
    *,
    dataset: str = "training",
    rul_cap: float | None = None,
    quarantined: int | None = None,
) -> ValidationReport:
    """The report on ``telemetry`` (``machine_id, ts, seq`` and sensor columns) and ``events``
    (``machine_id, ts, kind``) of one machine type. ``rul_cap``: the cap training uses (the type's,
    else derived from the lives when the type counts time and sets none)."""
    report = ValidationReport(dataset, machine_type.name)
    keys_ok = _schema(report, telemetry, events, machine_type)
    report.summary = {
        "rows": telemetry.height,
        "machines": telemetry["machine_id"].n_unique() if "machine_id" in telemetry.columns else 0,
        "events": events.height,
        "time_unit": machine_type.time_unit,
    }
    if quarantined is not None:
        report.summary["quarantined"] = quarantined
    if keys_ok and telemetry.height:
        report.summary["first"] = str(telemetry["ts"].min())
        report.summary["last"] = str(telemetry["ts"].max())
    _ranges(report, telemetry, machine_type)
    if keys_ok and telemetry.height:
        _gaps(report, telemetry)
        _labels(report, telemetry, events, machine_type, rul_cap)
    return report


def report_texts(report: ValidationReport) -> dict[str, str]:
    """The report as MLflow artifacts (path → text)."""
    return {"validation/report.json": report.to_json(), "validation/report.html": report.to_html()}


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "string"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype.is_integer():
        return "integer"
    if dtype.is_numeric():
        return "number"
    return str(dtype)


def _schema(report: ValidationReport, telemetry: pl.DataFrame, events: pl.DataFrame, mt: MachineType) -> bool:
    columns = {c: _kind(t) for c, t in telemetry.schema.items()}
    keys_ok = True
    for key, kind in KEYS.items():
        if key not in columns:
            report.add("schema", "error", "missing_column", f"readings have no {key} column", blocking=True)
            keys_ok = False
        elif columns[key] != kind and not (key == "machine_id" and columns[key] == "integer"):
            report.add("schema", "error", "bad_dtype", f"{key} is {columns[key]}, not {kind}", blocking=True)
            keys_ok = False
    absent_required = sorted(mt.required - set(columns))
    if absent_required:
        report.add(
            "schema",
            "error",
            "missing_sensor",
            f"required sensors absent: {', '.join(absent_required)}",
            blocking=True,
        )
    absent_optional = sorted(set(mt.sensor_names) - mt.required - set(columns))
    if absent_optional:
        report.add(
            "schema", "warning", "optional_sensor_absent", f"no column for {', '.join(absent_optional)}"
        )
    not_numeric = sorted(
        s for s in mt.sensor_names if s in columns and columns[s] not in ("number", "integer")
    )
    if not_numeric:
        report.add(
            "schema", "error", "bad_dtype", f"sensors not numeric: {', '.join(not_numeric)}", blocking=True
        )
    if telemetry.height == 0:
        report.add("schema", "error", "empty", "no readings", blocking=True)
    missing_event_keys = [k for k in EVENT_KEYS if k not in events.columns]
    if missing_event_keys and events.height:
        report.add(
            "schema",
            "error",
            "missing_column",
            f"events have no {', '.join(missing_event_keys)} column",
            blocking=True,
        )
    known = {*KEYS, *mt.sensor_names}
    report.sections["schema"] = {
        "columns": [{"column": c, "type": k, "role": _role(c, mt)} for c, k in columns.items()],
        "required_sensors": sorted(mt.required),
        "optional_sensors": sorted(set(mt.sensor_names) - mt.required),
        "other_columns": sorted(set(columns) - known),
    }
    return keys_ok and not missing_event_keys


def _role(column: str, mt: MachineType) -> str:
    if column in KEYS:
        return "key"
    if column not in mt.sensor_names:
        return "other"
    sensor = mt.sensor(column)
    flags = ["optional"] * (not sensor.required) + ["not informative"] * (not sensor.informative)
    return ", ".join([sensor.role, *flags])


def _ranges(report: ValidationReport, telemetry: pl.DataFrame, mt: MachineType) -> None:
    sensors = [s for s in mt.sensors if s.name in telemetry.columns and telemetry[s.name].dtype.is_numeric()]
    rows, table = telemetry.height, []
    if sensors and rows:
        exprs = []
        for s in sensors:
            v = pl.col(s.name).cast(pl.Float64)
            finite = v.filter(v.is_finite())
            exprs += [
                v.null_count().alias(f"{s.name}:nulls"),
                (~v.is_finite()).sum().alias(f"{s.name}:non_finite"),
                (v.is_finite() & ((v < s.low) | (v > s.high))).sum().alias(f"{s.name}:out_of_range"),
                finite.min().alias(f"{s.name}:min"),
                finite.max().alias(f"{s.name}:max"),
                finite.mean().alias(f"{s.name}:mean"),
                finite.std().alias(f"{s.name}:std"),
            ]
        stats = telemetry.select(exprs).row(0, named=True)
        for s in sensors:
            got = {k.split(":", 1)[1]: v for k, v in stats.items() if k.split(":", 1)[0] == s.name}
            nulls, bad, outside = (
                int(got["nulls"]),
                int(got["non_finite"] or 0),
                int(got["out_of_range"] or 0),
            )
            table.append(
                {"sensor": s.name, "low": s.low, "high": s.high, "null_share": round(nulls / rows, 6)}
                | {k: got[k] for k in ("min", "max", "mean", "std")}
                | {"nulls": nulls, "non_finite": bad, "out_of_range": outside}
            )
            if nulls and s.required:
                report.add("ranges", "error", "nulls_in_required", f"{s.name}: {nulls:,} readings lack it")
            elif nulls / rows > MOSTLY_MISSING:
                report.add(
                    "ranges", "warning", "mostly_missing", f"{s.name}: {nulls / rows:.0%} of readings lack it"
                )
            if bad:
                report.add("ranges", "error", "non_finite", f"{s.name}: {bad:,} NaN or infinite values")
            if outside:
                report.add(
                    "ranges",
                    "warning",
                    "out_of_range",
                    f"{s.name}: {outside:,} values outside [{s.low:g}, {s.high:g}]",
                )
            informative = s.informative and s.role != "setting"
            if informative and nulls < rows and (got["std"] or 0.0) == 0.0 and rows > 1:
                report.add(
                    "ranges", "warning", "constant_sensor", f"{s.name} never changes: it tells nothing"
                )
    report.sections["ranges"] = {"sensors": table}


def _gaps(report: ValidationReport, telemetry: pl.DataFrame) -> None:
    ts = pl.col("ts").cast(pl.Datetime("us", "UTC")).dt.epoch("us")
    rows = telemetry.select("machine_id", "seq", ts.alias("us")).sort("machine_id", "seq", "us")
    step = (pl.col("us") - pl.col("us").shift(1).over("machine_id")).cast(pl.Float64) / 1e6
    rows = rows.with_columns(
        step=step,
        seq_step=pl.col("seq") - pl.col("seq").shift(1).over("machine_id"),
    ).with_columns(usual=pl.col("step").filter(pl.col("step") > 0).median().over("machine_id"))
    per = rows.group_by("machine_id").agg(
        readings=pl.len(),
        duplicate_seq=(pl.col("seq_step") == 0).sum(),
        duplicate_ts=pl.col("us").is_duplicated().sum(),
        out_of_order=(pl.col("step") < 0).sum(),
        seq_gaps=(pl.col("seq_step") > 1).sum(),
        time_gaps=(pl.col("step") > GAP_FACTOR * pl.col("usual")).sum(),
        usual_interval_s=pl.col("usual").first(),
        longest_gap_s=pl.col("step").max(),
        intervals=pl.col("step").is_not_null().sum(),
    )
    totals = {
        c: int(per[c].sum())
        for c in ("duplicate_seq", "duplicate_ts", "out_of_order", "seq_gaps", "time_gaps")
    }
    intervals = int(per["intervals"].sum())
    worst = per.with_columns(
        trouble=pl.sum_horizontal("duplicate_seq", "duplicate_ts", "out_of_order", "seq_gaps", "time_gaps")
    ).filter(pl.col("trouble") > 0)
    report.sections["gaps"] = {
        **totals,
        "intervals": intervals,
        "gap_factor": GAP_FACTOR,
        "median_interval_s": per["usual_interval_s"].median(),
        "machines": worst.sort("trouble", "machine_id", descending=[True, False])
        .head(TOP)
        .drop("trouble", "intervals")
        .to_dicts(),
    }
    n = totals
    if n["duplicate_seq"]:
        report.add(
            "gaps", "error", "duplicate_readings", f"{n['duplicate_seq']:,} readings repeat a machine's seq"
        )
    if n["duplicate_ts"]:
        report.add(
            "gaps", "warning", "duplicate_timestamps", f"{n['duplicate_ts']:,} readings share a machine's ts"
        )
    if n["out_of_order"]:
        report.add(
            "gaps", "warning", "out_of_order", f"{n['out_of_order']:,} readings are older than the seq before"
        )
    if n["seq_gaps"]:
        report.add(
            "gaps", "warning", "seq_gaps", f"{n['seq_gaps']:,} places where a machine's seq skips readings"
        )
    if intervals and n["time_gaps"] / intervals > GAP_SHARE:
        report.add(
            "gaps",
            "warning",
            "time_gaps",
            f"{n['time_gaps'] / intervals:.1%} of intervals exceed {GAP_FACTOR:g}x their machine's usual one",
        )


def _labels(
    report: ValidationReport,
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    mt: MachineType,
    rul_cap: float | None,
) -> None:
    unit = mt.unit_seconds
    machines = set(telemetry["machine_id"].unique().to_list())
    kinds = dict(events.group_by("kind").len().iter_rows()) if events.height else {}
    failures = events.filter(pl.col("kind") == "failure") if events.height else events
    failed = set(failures["machine_id"].unique().to_list()) if failures.height else set()
    facts: dict[str, Any] = {
        "events_by_kind": kinds,
        "failures": failures.height,
        "machines_with_failure": len(failed & machines),
        "machines_without_failure": len(machines - failed),
    }
    orphans = sorted(set(events["machine_id"].unique().to_list()) - machines) if events.height else []
    if orphans:
        report.add(
            "labels",
            "warning",
            "events_without_readings",
            f"{len(orphans)} machines have events but no readings: {', '.join(map(str, orphans[:TOP]))}",
        )
    if not failed & machines:
        report.add(
            "labels",
            "error",
            "no_failures",
            f"no machine of type {mt.name} has a failure event: nothing to learn a lifetime from "
            "(import failure events: pitstop import events)",
            blocking=True,
        )
    if failures.height:
        first = telemetry.group_by("machine_id").agg(
            pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")
        )
        placed = failures.select("machine_id", pl.col("ts").cast(pl.Datetime("us", "UTC"))).join(
            first.with_columns(pl.col("first", "last").cast(pl.Datetime("us", "UTC"))), on="machine_id"
        )
        early = placed.filter(pl.col("ts") < pl.col("first")).height
        if early:
            report.add(
                "labels",
                "warning",
                "failure_before_readings",
                f"{early} failures precede their machine's readings",
            )
        after = placed.group_by("machine_id").agg(pl.col("ts").max(), pl.col("last").first())
        facts["machines_read_after_last_failure"] = after.filter(pl.col("last") > pl.col("ts")).height
    base = telemetry.select("machine_id", "ts", "seq")
    labelled = rul_labels(
        base, events.filter(pl.col("kind").is_in(["failure", "maintenance"])), rul_cap, 1.0, unit
    )
    known = labelled.filter(~pl.col("censored"))
    facts["label_rows"] = labelled.height
    facts["rows_without_label"] = telemetry.height - labelled.height
    facts["censored_share"] = round(1 - known.height / telemetry.height, 6)
    facts["rul_cap"] = rul_cap
    if labelled.height:
        facts["rul_min"], facts["rul_max"] = labelled["rul"].min(), labelled["rul"].max()
        if (labelled["rul"] < 0).any():
            report.add("labels", "error", "negative_rul", "some RUL labels are negative")
    if known.height:
        lives = (
            known.with_columns(
                start=(pl.col("rul_uncapped") > pl.col("rul_uncapped").shift(1).over("machine_id")).fill_null(
                    True
                )
            )
            .with_columns(life=pl.col("start").cast(pl.Int64).cum_sum().over("machine_id"))
            .group_by("machine_id", "life")
            .agg(pl.col("rul_uncapped").max().alias("length"))["length"]
        )
        facts["lives"] = lives.len()
        facts["life_min"], facts["life_median"], facts["life_max"] = lives.min(), lives.median(), lives.max()
    if labelled.height == 0 and not any(p.blocking for p in report.problems):
        report.add("labels", "error", "no_labels", "no reading has a known RUL label", blocking=True)
    report.sections["labels"] = facts
