"""``pitstop backup`` while the platform runs, ``pitstop restore`` into a new folder: the same
champion, work orders and lake versions, and the stream carries on with nothing lost or doubled."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

import pitstop.backup.create
from pitstop.backup import read_manifest
from pitstop.cli import cli
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema.wire import decode_table
from pitstop.store import MachineState, WorkOrder
from tests.conftest import make_settings
from tests.test_processor import publish

LIVE = {"eng-001": 1, "eng-002": 2, "eng-003": 3}  # early cycles of FD001 test units: no orders


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _summary(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _open_order(platform: Platform, machine_id: str) -> None:
    now = datetime.now(UTC)
    with platform.db.session() as s:
        s.add(
            WorkOrder(
                machine_id=machine_id,
                status="in_progress",
                priority="high",
                reason="bearing noise reported by the driver",
                predicted_rul=12.0,
                model_version="1",
                opened_at=now,
                seq=10,
            )
        )


def _orders(platform: Platform) -> list[tuple[Any, ...]]:
    with platform.db.session() as s:
        rows = s.scalars(select(WorkOrder).order_by(WorkOrder.id)).all()
        return [(o.id, o.machine_id, o.status, o.reason, o.predicted_rul, o.opened_at) for o in rows]


def _drain(proc: Processor) -> None:
    while proc.lag() > 0:
        proc.run_once()


def _bus_readings(platform: Platform) -> set[tuple[str, int]]:
    """Every (machine, seq) of a live machine in the bus, read by a consumer that commits nothing."""
    found = set()
    for message in platform.bus.read("backup-test", 1_000_000):
        table = decode_table(message.payload)
        found.update(zip(table["machine_id"].to_pylist(), table["seq"].to_pylist(), strict=True))
    return {r for r in found if r[0] in LIVE}


def test_a_backup_taken_while_the_stream_runs_restores_the_same_platform(
    trained: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open_order(trained, "eng-010")
    for machine, unit in LIVE.items():
        publish(trained, machine, unit, 0, 20)
    proc = Processor(trained)
    proc.bootstrap()
    _drain(proc)
    publish(trained, "eng-001", 1, 20, 10)  # waiting on the bus when the backup starts

    # the stream moves on between the copies (a batch processed, readings published): after the
    # ops DB was copied, and after the lake was pinned, before the bus is copied
    copy_ops, pin_lake = pitstop.backup.create._ops_state, pitstop.backup.create.tables_now

    def ops_then_a_batch(*args: Any) -> Any:
        found = copy_ops(*args)
        proc.run_once()
        publish(trained, "eng-002", 2, 20, 10)
        return found

    def lake_then_a_batch(*args: Any) -> Any:
        found = pin_lake(*args)
        proc.run_once()
        publish(trained, "eng-003", 3, 20, 10)
        return found

    monkeypatch.setattr(pitstop.backup.create, "_ops_state", ops_then_a_batch)
    monkeypatch.setattr(pitstop.backup.create, "tables_now", lake_then_a_batch)
    dest = tmp_path / "backup"
    made = _summary(_run("backup", str(dest), "--data-dir", str(trained.settings.data_dir)))
    monkeypatch.undo()
    manifest = read_manifest(dest)
    assert made["files"] == len(manifest["files"]) and manifest["ops_db_revision"]
    assert (dest / "backup.json").stat().st_mode & 0o777 == 0o600
    assert all(p.stat().st_mode & 0o777 == 0o700 for p in dest.rglob("*") if p.is_dir())

    # what the copy must match: the lake at the pinned versions, the champion, the work orders
    pinned = {Path(name).name: t["version"] for name, t in manifest["lake"].items()}
    assert set(pinned) == {"telemetry", "events", "quarantine", "predictions"}
    counts = {name: trained.lake.count(name, version) for name, version in pinned.items()}
    assert pinned["telemetry"] < trained.lake.version("telemetry")  # the lake moved on since
    features = np.random.default_rng(7).normal(size=(8, len(trained.scorer.feature_names)))
    champion = trained.scorer.model.version
    scores = [(s.rul, s.lower, s.upper, s.model_version) for s in trained.scorer.score_matrix(features)]
    orders = _orders(trained)
    assert [o[1] for o in orders] == ["eng-010"]
    old_dir = trained.settings.data_dir
    trained.close()
    old_dir.rename(tmp_path / "gone")  # the restored registry must not read the old folder

    new_dir = tmp_path / "restored"
    restored_summary = _summary(_run("restore", str(dest), "--data-dir", str(new_dir)))
    assert restored_summary["mlflow_paths_rewritten"] >= 3  # experiment, run, version source
    with closing(sqlite3.connect(new_dir / "mlflow.db")) as mlflow_db:
        sources = [row[0] for row in mlflow_db.execute("SELECT source FROM model_versions")]
    assert sources and all(s.startswith((new_dir / "mlartifacts").resolve().as_uri() + "/") for s in sources)
    restored = Platform.open(make_settings(new_dir))
    try:
        assert {name: restored.lake.version(name) for name in pinned} == pinned
        assert {name: restored.lake.count(name) for name in pinned} == counts
        restored.scorer.reload()
        assert restored.scorer.model.version == champion
        again = [(s.rul, s.lower, s.upper, s.model_version) for s in restored.scorer.score_matrix(features)]
        assert again == scores
        assert _orders(restored) == orders

        # the restored stream finishes what the backup caught mid-way: every reading on its bus is
        # in the lake once, and counted once in the ops DB
        after = Processor(restored)
        after.bootstrap()
        _drain(after)
        lake = restored.lake.read("telemetry", columns=["machine_id", "seq"], machine_ids=list(LIVE))
        assert lake.height == len(set(lake.iter_rows())) == len(_bus_readings(restored))
        assert set(lake.iter_rows()) == _bus_readings(restored)
        with restored.db.session() as s:
            counted = {m: n for m, n in s.execute(select(MachineState.machine_id, MachineState.readings))}
        assert {m: counted[m] for m in LIVE} == dict(lake.group_by("machine_id").len().iter_rows())
    finally:
        restored.close()


def test_restore_refuses_a_tampered_backup_and_a_used_folder(platform: Platform, tmp_path: Path) -> None:
    data_dir = platform.settings.data_dir
    publish(platform, "eng-001", 1, 0, 5)
    (data_dir / "webhook-secret").write_text("s3cret")
    dest = tmp_path / "backup"
    _summary(_run("backup", str(dest), "--data-dir", str(data_dir)))

    refused = _run("backup", str(dest), "--data-dir", str(data_dir))
    assert refused.exit_code == 2 and "error [backup_exists]" in refused.stderr
    assert "exists and is not empty" in refused.stderr  # refused before anything is copied

    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    refused = _run("restore", str(dest), "--data-dir", str(used))
    assert refused.exit_code == 2 and "error [restore_target_not_empty]" in refused.stderr
    assert "exists and is not empty" in refused.stderr
    assert [p.name for p in used.iterdir()] == ["notes.txt"]

    good = tmp_path / "good"
    _summary(_run("restore", str(dest), "--data-dir", str(good)))
    assert (good / "webhook-secret").read_text() == "s3cret"

    secret = dest / "data" / "webhook-secret"
    secret.write_text("s3creT")  # same size, other bytes
    target = tmp_path / "fresh"
    refused = _run("restore", str(dest), "--data-dir", str(target))
    assert refused.exit_code == 2 and "error [backup_corrupt]" in refused.stderr
    assert "webhook-secret (sha256 differs)" in refused.stderr
    assert not target.exists() and not list(tmp_path.glob(".fresh.partial-*"))

    manifest = json.loads((dest / "backup.json").read_text())
    (dest / "backup.json").write_text(json.dumps(manifest | {"mlflow_db": "../../elsewhere.db"}))
    refused = _run("restore", str(dest), "--data-dir", str(target))
    assert refused.exit_code == 2 and "names files outside the backup" in refused.stderr
