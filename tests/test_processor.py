from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pitstop.ingest.validate import validate_batch
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN, Reading, encode_readings, encode_table
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
    platform.bus.publish(encode_readings(batch, platform.lake.sensors))


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

    restarted = Processor(trained)  # a new process: state rebuilt from the lake up to the bus position
    restarted.bootstrap()
    report = restarted.run_once()
    # the batch is processed again (features, scores) but the lake already has it: nothing written
    assert (report.readings, report.written, report.duplicates, report.scored) == (35, 0, 0, 2)
    assert live_rows(trained) == 35
    assert restarted.lag() == 0
    assert restarted.online is not None and restarted.online.readings("eng-001") == 20

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
    fresh.state.last = {}  # and no memory of what was processed
    fresh.run_once()
    assert trained.lake.version("telemetry") == version
    assert live_rows(trained) == 10


def test_out_of_range_goes_to_quarantine_once_even_across_a_crash(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = shipped("fd001_test").filter(unit=3).sort("cycle").head(6).to_dicts()
    now = datetime.now(UTC)
    batch = []
    for i, r in enumerate(rows):
        values = {s: r[s] for s in TURBOFAN.sensor_names}
        if i in (2, 4):
            values["s3"] = 9999.0  # far outside the HPC outlet temperature range
        batch.append(
            Reading(machine_id="eng-003", ts=now - timedelta(seconds=10 - i), seq=i + 1, values=values)
        )
    # the ingest endpoint marks out-of-range readings; build the same message here
    validated = validate_batch(
        [
            {"machine_id": b.machine_id, "ts": b.ts.isoformat(), "seq": b.seq, "values": b.values}
            for b in batch
        ],
        TURBOFAN,
        trained.lake.sensors,
        machine_id="eng-003",
        last_seq=-1,
        max_readings=100,
        horizon=now + timedelta(minutes=5),
    )
    assert (validated.accepted, validated.quarantined) == (4, 2)
    assert validated.table is not None
    trained.bus.publish(encode_table(validated.table))

    proc = Processor(trained)
    proc.bootstrap()
    real_append = trained.lake.append

    def append_then_die(table: str, *args: object, **kwargs: object) -> bool:
        if table == "quarantine":
            raise RuntimeError("killed between the two lake commits")
        return real_append(table, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trained.lake, "append", append_then_die)
    with pytest.raises(RuntimeError):
        proc.run_once()
    monkeypatch.undo()

    restarted = Processor(trained)
    restarted.bootstrap()
    report = restarted.run_once()
    assert (report.written, report.quarantined) == (0, 2)  # telemetry already had its rows
    clean = trained.lake.read("telemetry", machine_ids=["eng-003"])
    held = trained.lake.read("quarantine", machine_ids=["eng-003"])
    assert sorted(clean["seq"].to_list()) == [1, 2, 4, 6]
    assert sorted(held["seq"].to_list()) == [3, 5]
    assert all("s3=9999 outside [1200, 1700]" in reason for reason in held["reason"].to_list())
    assert restarted.online is not None and restarted.state.last["eng-003"] == 6
    assert restarted.online.readings("eng-003") == 4  # quarantined values never reach the features


def test_processor_features_equal_the_offline_build_and_survive_a_restart(trained: Platform) -> None:
    """Replay FD001 test engines through the bus: after every micro-batch, the features the processor
    holds for each machine it touched equal the offline build of the lake at that moment. A
    maintenance event resets one machine on the way, and halfway the processor restarts from its
    snapshot (reading only the lake rows past it)."""
    import polars as pl
    import pyarrow as pa

    from pitstop.features import build_features

    machines = {f"eng-{u:03d}": u for u in range(1, 9)}
    start = datetime.now(UTC) - timedelta(days=2)
    data = shipped("fd001_test").filter(pl.col("unit").is_in(list(machines.values())))
    stamp = {c: start + timedelta(minutes=c) for c in range(1, 400)}

    def publish_cycles(first: int, last: int) -> None:
        for machine, unit in machines.items():
            rows = data.filter((pl.col("unit") == unit) & pl.col("cycle").is_between(first, last)).sort(
                "cycle"
            )
            if rows.height:
                batch = [
                    Reading(
                        machine_id=machine,
                        ts=stamp[int(r["cycle"])],
                        seq=int(r["cycle"]),
                        values={s: r[s] for s in TURBOFAN.sensor_names},
                    )
                    for r in rows.to_dicts()
                ]
                trained.bus.publish(encode_readings(batch, trained.lake.sensors))

    def check(proc: Processor) -> int:
        assert proc.online is not None
        spec = proc.online.spec
        lake = trained.lake.read(
            "telemetry",
            columns=["machine_id", "ts", "seq", "bus_position", *spec.inputs],
            machine_ids=list(machines),
        )
        events = trained.lake.read("events", machine_ids=list(machines))
        ids = sorted(m for m in machines if proc.online.readings(m) > 0)
        latest = pl.DataFrame({"machine_id": ids, "seq": [proc.online.last_seen(m) for m in ids]})
        for exact in (True, False):
            offline = build_features(lake, spec, events, exact=exact)
            want = latest.join(offline, on=["machine_id", "seq"], how="left").select(spec.names).to_numpy()
            if exact:
                np.testing.assert_allclose(proc.online.get(ids, exact=True), want, rtol=1e-9, atol=1e-9)
            else:  # what the model scores: float32 steps, the same but for a rare last step
                np.testing.assert_allclose(proc.online.get(ids), want, rtol=2.4e-7, atol=0)
        return len(ids)

    proc = Processor(trained)
    proc.bootstrap()
    compared = 0
    for first in range(1, 61, 6):
        publish_cycles(first, first + 5)
        proc.run_once()
        compared += check(proc)
        if first == 25:  # eng-002 overhauled after its cycle 30 (the next batch's readings follow it)
            event = pa.table(
                {
                    "machine_id": ["eng-002"],
                    "ts": pa.array([stamp[30] + timedelta(seconds=1)], pa.timestamp("us", tz="UTC")),
                    "seq": pa.array([None], pa.int64()),
                    "kind": ["maintenance"],
                    "detail": ["overhaul"],
                }
            )
            trained.lake.append("events", event)
    after = data.filter((pl.col("unit") == 2) & pl.col("cycle").is_between(31, 60)).height
    assert proc.online is not None and proc.online.readings("eng-002") == after > 0  # reset at 31
    proc.snapshot()

    restarted = Processor(trained)
    restarted.bootstrap()
    assert restarted.restored_from == trained.bus.position("processor")
    for first in range(61, 121, 6):
        publish_cycles(first, first + 5)
        restarted.run_once()
        compared += check(restarted)
    assert compared > 100


def test_each_row_lands_with_the_bus_position_of_its_own_message(trained: Platform) -> None:
    publish(trained, "eng-001", 1, 0, 7)
    publish(trained, "eng-002", 2, 0, 1)
    publish(trained, "eng-001", 1, 7, 3)
    head = trained.bus.head()
    proc = Processor(trained)
    proc.bootstrap()
    assert proc.run_once().written == 11
    landed = trained.lake.read(
        "telemetry", columns=["machine_id", "seq", "bus_position"], machine_ids=["eng-001", "eng-002"]
    ).sort("bus_position", "machine_id", "seq")
    positions = landed["bus_position"].to_list()
    assert positions == [head - 2] * 7 + [head - 1] + [head] * 3
    assert landed.filter(landed["bus_position"] == head)["seq"].to_list() == [8, 9, 10]


def test_monitoring_runs_after_the_batch_is_stored_and_a_failing_check_does_not_stop_it(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = Processor(trained)
    proc.bootstrap()
    seen: list[tuple[str, int]] = []

    def quality(*args: object) -> None:
        # the batch is in the lake and its bus position committed before any check runs
        seen.append(("quality", live_rows(trained)))
        assert proc.lag() == 0
        raise RuntimeError("a broken check")

    def drift(*args: object) -> None:
        seen.append(("drift", live_rows(trained)))
        raise RuntimeError("a broken trigger")

    monkeypatch.setattr(proc.monitor, "check_quality", quality)
    monkeypatch.setattr(proc.monitor, "observe", drift)
    publish(trained, "eng-001", 1, 0, 10)
    publish(trained, "eng-002", 2, 0, 10)
    report = proc.run_once()  # does not raise: the failures are logged
    assert (report.written, report.scored) == (20, 2)
    assert seen == [("quality", 20), ("drift", 20)]  # every check tried, once, after the store
    publish(trained, "eng-001", 1, 10, 5)
    assert proc.run_once().written == 5  # the stream goes on; nothing read again
    assert [what for what, _ in seen] == ["quality", "drift"] * 2
