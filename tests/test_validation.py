"""Dataset validation reports: ok on a good dataset, each problem named on a crafted bad one, and
kept with the MLflow run of every training and every import."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.training.cmapss import failures, telemetry
from pitstop.training.validation import validate_dataset
from tests.test_import import _engine, _write_csv


def fd001(units: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = pl.read_parquet(str(files("pitstop.data") / "fd001_train.parquet"))
    train = telemetry(raw.filter(pl.col("unit") <= units), "u")
    return train, failures(train)


def test_a_good_dataset_is_ok_and_its_report_is_self_contained() -> None:
    train, events = fd001(10)
    report = validate_dataset(train, events, TURBOFAN, rul_cap=125.0)
    assert report.verdict == "ok" and report.trainable, report.problems
    facts = report.to_dict()
    assert json.loads(report.to_json())["verdict"] == "ok"
    assert facts["summary"]["rows"] == train.height and facts["summary"]["machines"] == 10
    labels = facts["sections"]["labels"]
    assert labels["machines_with_failure"] == 10 and labels["censored_share"] == 0
    assert (labels["rul_min"], labels["rul_max"]) == (0.0, 125.0)
    page = report.to_html()
    assert "Verdict: ok" in page
    assert not re.search(r"""(src|href)=|https?://|<script""", page)  # nothing fetched, nothing run


def _bend(train: pl.DataFrame) -> pl.DataFrame:
    """Every data problem the report knows, each in its own place."""
    hour = pl.duration(hours=1)
    bent = train.with_columns(  # every 4th interval 20 h instead of 1 h: time gaps
        (pl.col("ts") + hour * (19 * (pl.col("seq") // 4))).alias("ts"),
        pl.when((pl.col("machine_id") == "u1") & (pl.col("seq") == 5)).then(1e6).otherwise("s2").alias("s2"),
        pl.when((pl.col("machine_id") == "u1") & (pl.col("seq") == 6)).then(None).otherwise("s3").alias("s3"),
        pl.when((pl.col("machine_id") == "u1") & (pl.col("seq") == 7))
        .then(float("nan"))
        .otherwise("s4")
        .alias("s4"),
        pl.lit(554.0).alias("s7"),  # informative, and never changes
    )
    bent = bent.filter(~((pl.col("machine_id") == "u2") & (pl.col("seq") == 10)))  # a seq gap
    swapped = bent.with_columns(  # u3's reading 21 stamped before reading 20
        pl.when((pl.col("machine_id") == "u3") & (pl.col("seq") == 21))
        .then(pl.col("ts") - pl.duration(days=30))
        .otherwise("ts")
        .alias("ts")
    )
    repeated = swapped.filter((pl.col("machine_id") == "u4") & (pl.col("seq") == 30))  # delivered twice
    return pl.concat([swapped, repeated])


def test_a_bad_dataset_names_each_problem_and_still_trains() -> None:
    train, events = fd001(6)
    bent_events = pl.concat(
        [
            events.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))),
            pl.DataFrame(  # a machine no reading came from, and a failure before u5's first reading
                {"machine_id": ["ghost", "u5"], "seq": [None, None], "ts": [train["ts"].min()] * 2}
            ).with_columns(
                pl.col("seq").cast(pl.Int64),
                pl.col("ts").cast(pl.Datetime("us", "UTC")) - pl.duration(days=1),
                pl.lit("failure").alias("kind"),
            ),
        ],
        how="diagonal",
    )
    report = validate_dataset(_bend(train), bent_events, TURBOFAN, rul_cap=125.0)
    assert report.verdict == "errors" and report.trainable
    assert report.codes() == {
        "out_of_range",
        "nulls_in_required",
        "non_finite",
        "constant_sensor",
        "seq_gaps",
        "out_of_order",
        "duplicate_readings",
        "duplicate_timestamps",
        "time_gaps",
        "events_without_readings",
        "failure_before_readings",
    }
    by_code = {p.code: p for p in report.problems}
    assert "s2" in by_code["out_of_range"].message and "s3" in by_code["nulls_in_required"].message
    assert "s4" in by_code["non_finite"].message and "s7" in by_code["constant_sensor"].message
    assert "ghost" in by_code["events_without_readings"].message
    page = report.to_html()
    assert all(code in page for code in report.codes()) and "Verdict: errors" in page


@pytest.mark.parametrize(
    ("bend", "code"),
    [
        (lambda t, e: (t.drop("s2"), e), "missing_sensor"),
        (lambda t, e: (t, e.clear()), "no_failures"),
        (lambda t, e: (t.clear(), e.clear()), "empty"),
    ],
)
def test_a_problem_that_makes_training_impossible_is_blocking(bend: Any, code: str) -> None:
    report = validate_dataset(*bend(*fd001(3)), TURBOFAN, rul_cap=125.0)
    assert not report.trainable and report.verdict == "errors"
    assert code in {p.code for p in report.problems if p.blocking}
    assert "Training is impossible" in report.to_html()


def _artifacts(platform: Platform, run_id: str) -> set[str]:
    client = platform.registry.client
    return {a.path for a in client.list_artifacts(run_id, "validation")}


def test_every_training_run_keeps_its_validation_report(trained: Platform) -> None:
    version = trained.registry.versions()[0]
    assert _artifacts(trained, version["run_id"]) == {"validation/report.json", "validation/report.html"}
    local = trained.registry.client.download_artifacts(version["run_id"], "validation/report.json")
    report = json.loads(Path(local).read_text())
    assert report["dataset"] == "training" and report["machine_type"] == "turbofan"
    assert report["trainable"] is True


def test_every_import_keeps_its_validation_report(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = [_engine("eng-1", h) for h in range(12)] + [_engine("eng-2", h) for h in range(12)]
    path = _write_csv(tmp_path / "history.csv", rows)
    result = CliRunner().invoke(cli, ["import", "readings", str(path), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout.strip().splitlines()[-1])["validation"]
    assert entry["machine_type"] == "turbofan"
    assert entry["verdict"] == "errors"  # no failure imported yet: nothing to learn a lifetime from
    assert f"report: {entry['report']}" in result.stderr
    assert "no_failures" in Path(urlparse(entry["report"]).path).read_text()
    p = Platform.open(_settings(data))
    try:
        assert _artifacts(p, entry["run_id"]) == {"validation/report.json", "validation/report.html"}
        run = p.registry.client.get_run(entry["run_id"])
        assert run.data.tags["pitstop.import_kind"] == "readings"
        assert run.data.tags["pitstop.validation_verdict"] == "errors"
    finally:
        p.close()


def _settings(data: Path) -> Any:
    from pitstop.config import load_settings

    return load_settings(None, data_dir=data, intake_workers=0)
