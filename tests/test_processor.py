from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN, Reading, encode_batch
from pitstop.sim import shipped


def publish(platform: Platform, machine: str, unit: int, start: int, n: int) -> None:
    rows = shipped("fd001_test").filter(unit=unit).sort("cycle").slice(start, n).to_dicts()
    now = datetime.now(UTC)
    batch = [
        Reading(
            machine_id=machine,
            ts=now - timedelta(seconds=len(rows) - i),
            seq=int(r["cycle"]),
            values={s: r[s] for s in TURBOFAN.sensor_names},
        )
        for i, r in enumerate(rows)
    ]
    platform.bus.publish(encode_batch(batch))


def live_rows(platform: Platform) -> int:
    return platform.lake.read("telemetry", columns=["seq"], machine_ids=["eng-001", "eng-002"]).height


def test_crash_before_bus_commit_writes_nothing_twice(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(trained, "eng-001", 1, 0, 20)
    publish(trained, "eng-002", 2, 0, 15)
    first = Processor(trained)
    first.bootstrap()

    def crash(consumer: str, position: int) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(trained.bus, "commit", crash)
    with pytest.raises(RuntimeError):
        first.run_once()
    assert live_rows(trained) == 35  # the lake commit happened, the bus position did not
    monkeypatch.undo()

    restarted = Processor(trained)  # a new process: state rebuilt from the lake
    restarted.bootstrap()
    report = restarted.run_once()
    assert (report.readings, report.written, report.duplicates) == (35, 0, 35)
    assert live_rows(trained) == 35
    assert restarted.lag() == 0
    assert restarted.online is not None and restarted.online.count("eng-001") == 20

    # the stream carries on where it stopped, with features continuing from the restored state
    publish(trained, "eng-001", 1, 20, 5)
    assert restarted.run_once().written == 5
    assert live_rows(trained) == 40


def test_lake_commit_is_skipped_for_a_replayed_position(trained: Platform) -> None:
    publish(trained, "eng-001", 1, 0, 10)
    proc = Processor(trained)
    proc.bootstrap()
    proc.run_once()
    version = trained.lake.version("telemetry")
    # pretend the bus forgot its position (restored from an older backup): the Delta transaction
    # id makes the re-delivered batch a no-op for the lake even with empty feature state
    trained.bus.commit("processor", 0)
    fresh = Processor(trained)
    fresh.bootstrap()
    assert fresh.online is not None
    fresh.online = type(fresh.online)(fresh.online.spec)
    fresh.run_once()
    assert trained.lake.version("telemetry") == version
    assert live_rows(trained) == 10
