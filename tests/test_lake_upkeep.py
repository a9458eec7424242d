"""Lake upkeep: many small commits stay few files and a flat read time, and every version a
registered model's lineage names stays readable with its exact rows."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from pitstop.cli import cli
from pitstop.demo import register_live_fleet
from pitstop.errors import LakeError, ModelError
from pitstop.lake import Lake
from pitstop.lake.upkeep import LakeUpkeep, UpkeepPolicy
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.registry import Registry
from pitstop.registry.pins import lake_pins
from pitstop.schema import TURBOFAN
from tests.conftest import make_settings
from tests.test_processor import live_rows, publish

SENSORS = ["a", "b"]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
# 1,000 one-row commits (the processor's smallest batches): an append costs ~25 ms on the 2-core
# dev machine, so 2,000 would take the test past a minute; 1,000 already makes 10 upkeep rounds
COMMITS = 1_000
EVERY = 100  # an upkeep run every 100 commits, as the processor's thread does every few minutes
DAYS = 4  # the readings span four day partitions
PINS = (137, 450, 731)  # bus positions after which a model was trained (mid-round, as in life)


def _reading(position: int) -> pa.Table:
    ts = pa.array([T0 + timedelta(days=DAYS) * (position - 1) / COMMITS], pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "machine_id": [f"m{position % 7}"],
            "ts": ts,
            "seq": pa.array([position], pa.int64()),
            "day": ts.cast(pa.date32()),
            "bus_position": pa.array([position], pa.int64()),
            "a": [float(position)],
            "b": pa.nulls(1, pa.float64()),
        }
    )


def _files(lake: Lake, version: int | None = None) -> set[str]:
    """The data files a telemetry version references, relative to the table's folder."""
    root = Path(lake.path("telemetry")).resolve()
    return {
        Path(uri.removeprefix("file://")).resolve().relative_to(root).as_posix()
        for uri in lake.table("telemetry", version).file_uris()
    }


def _on_disk(lake: Lake) -> set[str]:
    root = Path(lake.path("telemetry"))
    return {p.relative_to(root).as_posix() for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


def _read_seconds(*lakes: Lake, repeat: int = 15) -> list[float]:
    """Median time of a full-table read of each lake, interleaved so load on the machine hits all."""
    times: list[list[float]] = [[] for _ in lakes]
    for _ in range(repeat):
        for lake, spent in zip(lakes, times, strict=True):
            started = time.perf_counter()
            lake.read("telemetry")
            spent.append(time.perf_counter() - started)
    return [statistics.median(spent) for spent in times]


@pytest.mark.heavy
def test_thousands_of_small_commits_stay_few_files_and_every_pinned_version_stays_readable(
    tmp_path: Path,
) -> None:
    lake = Lake(tmp_path / "lake", SENSORS)
    lake.ensure()
    pinned: dict[int, int] = {}  # telemetry version a model was trained on -> the rows it held
    upkeep = LakeUpkeep(
        lake,
        lambda: {"telemetry": list(pinned)},
        UpkeepPolicy(retention_hours=0),  # keep no unpinned history: only the pins keep versions
        tables=["telemetry"],
    )
    upkeep.protect()
    rounds = []
    for position in range(1, COMMITS + 1):
        assert lake.append("telemetry", _reading(position), app_id="processor", position=position)
        if position in PINS:
            pinned[lake.version()] = position
        if position % EVERY == 0:
            rounds.append(upkeep.run_once().tables[0])

    # flat: each round starts from the last round's commits and ends with one file per day
    assert len(rounds) == COMMITS // EVERY
    assert max(r.files_before for r in rounds) <= EVERY + DAYS
    assert all(r.files_after <= DAYS for r in rounds)
    last = rounds[-1]
    assert last.pinned == sorted(pinned)
    # on disk: exactly the files of the newest version and of the pinned ones, nothing else
    needed = _files(lake).union(*(_files(lake, v) for v in pinned))
    assert _on_disk(lake) == needed
    assert len(needed) <= 2 * EVERY + 2 * DAYS  # a few dozen to a couple of hundred, never 1,000

    # every pinned version reads back exactly the rows it held when the model was trained on it
    for version, rows in pinned.items():
        frame = lake.read("telemetry", version=version)
        assert sorted(frame["seq"].to_list()) == list(range(1, rows + 1))

    # a full read is within 2x of the same rows freshly written, compacted and checkpointed
    fresh = Lake(tmp_path / "fresh", SENSORS)
    fresh.ensure()
    fresh.append("telemetry", lake.read("telemetry").to_arrow())
    fresh.compact("telemetry")
    fresh.table("telemetry").create_checkpoint()
    assert fresh.count("telemetry") == lake.count("telemetry") == COMMITS
    upkept, compacted = _read_seconds(lake, fresh)
    assert upkept <= 2 * compacted, f"{upkept * 1e3:.1f} ms vs {compacted * 1e3:.1f} ms compacted"

    # the processor's idempotent position survives compaction, checkpoints and log cleanup
    reopened = Lake(tmp_path / "lake", SENSORS)
    assert reopened.committed_position("processor") == COMMITS
    assert not reopened.append("telemetry", _reading(COMMITS), app_id="processor", position=COMMITS)
    assert reopened.count("telemetry") == COMMITS

    # the models are deleted: their versions are let go, and disk and log shrink to the present
    oldest = min(pinned)
    pinned.clear()
    after = upkeep.run_once().tables[0]
    assert _on_disk(lake) == _files(lake)
    assert after.files_on_disk == after.files_after <= DAYS
    assert after.log_files < last.log_files
    assert after.log_files <= 8  # a checkpoint, the few commits after it, _last_checkpoint
    with pytest.raises(LakeError):
        lake.read("telemetry", version=oldest)
    assert lake.count("telemetry") == COMMITS


def test_upkeep_and_appends_run_side_by_side_without_conflicts(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", SENSORS)
    lake.ensure()
    upkeep = LakeUpkeep(lake, lambda: {}, UpkeepPolicy(retention_hours=0), tables=["telemetry"])
    upkeep.protect()
    failures: list[Exception] = []

    def appender() -> None:
        try:
            for position in range(1, 301):
                lake.append("telemetry", _reading(position), app_id="processor", position=position)
        except Exception as exc:  # reported below
            failures.append(exc)

    thread = threading.Thread(target=appender)
    thread.start()
    runs = []
    while thread.is_alive():
        runs.append(upkeep.run_once().tables[0])
    thread.join()
    assert failures == []
    assert len(runs) >= 3 and not any(r.notes for r in runs)  # nothing conflicted or was skipped
    assert sorted(lake.read("telemetry")["seq"].to_list()) == list(range(1, 301))
    assert lake.committed_position("processor") == 300


def test_when_the_pins_cannot_be_read_nothing_is_deleted(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", SENSORS)
    lake.ensure()

    def registry_down() -> dict[str, list[int]]:
        raise ModelError("the registry at http://mlflow:5000 did not answer")

    upkeep = LakeUpkeep(lake, registry_down, UpkeepPolicy(retention_hours=0), tables=["telemetry"])
    versions = {}
    for position in range(1, 31):
        lake.append("telemetry", _reading(position), app_id="processor", position=position)
        versions[lake.version()] = position
    report = upkeep.run_once()
    table = report.tables[0]
    assert report.pins_error == "the registry at http://mlflow:5000 did not answer"
    assert table.compacted == 30 and table.files_after <= 1 and table.vacuumed == 0
    assert table.files_on_disk == 30 + table.files_after  # the small files are all still there
    for version, rows in versions.items():  # so is every version's log
        assert lake.count("telemetry", version=version) == rows


def test_a_full_run_sweeps_files_no_version_knows_once_older_than_the_retention(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", SENSORS)
    lake.ensure()
    pinned: list[int] = []
    upkeep = LakeUpkeep(
        lake, lambda: {"telemetry": pinned}, UpkeepPolicy(retention_hours=1), tables=["telemetry"]
    )
    for position in range(1, 21):
        lake.append("telemetry", _reading(position), app_id="processor", position=position)
    pinned.append(lake.version())
    folder = Path(lake.path("telemetry")) / "day=2026-05-01"
    crashed, writing = folder / "part-crashed.parquet", folder / "part-being-written.parquet"
    for orphan in (crashed, writing):
        orphan.write_bytes(b"PAR1")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(crashed, (two_hours_ago, two_hours_ago))
    assert upkeep.run_once().tables[0].vacuumed == 0 and crashed.exists()  # a plain run: log only
    assert upkeep.run_once(full=True).tables[0].vacuumed == 1
    assert not crashed.exists() and writing.exists()  # a write in flight is younger than the retention
    assert lake.count("telemetry", version=pinned[0]) == 20


def test_registered_versions_pin_their_lake_versions_and_a_dead_registry_pins_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "pitstop-rul-pump")
    client = registry.client
    client.create_registered_model(registry.model_name)
    for lake_version, events_version in (("12", "3"), ("40", "3"), ("41", "5")):
        client.create_model_version(
            registry.model_name,
            source=str(tmp_path / "artifacts"),
            tags={"pitstop.lake_version": lake_version, "pitstop.events_version": events_version},
        )
    empty = Registry(registry.tracking_uri, tmp_path / "artifacts", "pitstop-rul-unregistered")
    assert lake_pins([registry, empty]) == {"telemetry": {12, 40, 41}, "events": {3, 5}}

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = Registry("http://127.0.0.1:9", tmp_path / "artifacts", "pitstop-rul-pump")
    with pytest.raises(ModelError, match="cannot list the versions of pitstop-rul-pump"):
        lake_pins([registry, dead])  # one unreadable registry makes every pin unknown


def test_lake_upkeep_command_prints_the_report(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["lake", "upkeep", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["pins_error"] is None
    assert {t["table"] for t in report["tables"]} == {"telemetry", "events", "quarantine", "predictions"}
    config = DeltaTable(str(data / "lake" / "telemetry")).metadata().configuration
    assert config["delta.enableExpiredLogCleanup"] == "false"  # writers no longer drop old logs


def test_the_processor_runs_upkeep_on_its_own_thread_while_batches_land(tmp_path: Path) -> None:
    platform = Platform.open(make_settings(tmp_path / "data", lake_upkeep_every_s=0.3))
    try:
        register_live_fleet(platform, ["eng-002"], TURBOFAN.name)
        processor = Processor(platform)
        processor.start()
        sent = 0
        try:  # a reading every 50 ms until upkeep has run twice beside the batches
            deadline = time.monotonic() + 60
            while (processor.upkeep.runs < 2 or sent < 20) and sent < 250 and time.monotonic() < deadline:
                publish(platform, "eng-002", 2, sent, 1)
                sent += 1
                time.sleep(0.05)
        finally:
            processor.stop(drain=True)
        assert processor.errors == 0
        assert processor.upkeep.runs >= 2
        report = processor.upkeep.last
        assert report is not None and report.pins_error is None  # the registry answered: no models
        assert live_rows(platform) == sent  # every reading landed once, compactions or not
        assert platform.lake.table("telemetry").metadata().configuration["delta.checkpointInterval"] == "100"
    finally:
        platform.close()


def test_the_raw_vacuum_command_keeps_the_versions_models_were_trained_on(trained: Platform) -> None:
    pinned = int(trained.registry.versions()[0]["tags"]["pitstop.lake_version"])
    rows = trained.lake.read("telemetry", version=pinned).height
    proc = Processor(trained)
    proc.bootstrap()
    publish(trained, "eng-001", 1, 0, 5)
    proc.run_once()  # a version after the pinned one
    # rows removed since (a quarantine fix, say): the files the pinned version reads are rewritten
    assert trained.lake.delete("telemetry", "seq = 1") > 0
    data = ["--data-dir", str(trained.settings.data_dir)]
    run = CliRunner().invoke(cli, ["lake", "vacuum", "telemetry", "--retention-hours", "0", "--yes", *data])
    assert run.exit_code == 0 and run.output.startswith("deleted"), run.output
    assert int(run.output.split()[1]) > 0  # files went: those of versions nothing pins
    assert trained.lake.read("telemetry", version=pinned).height == rows  # training stays reproducible
