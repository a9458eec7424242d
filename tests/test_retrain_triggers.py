"""The retrain triggers end to end in the processor: readings through the bus make a drift alert,
a failure the model missed makes a performance trigger, and the schedule fires from the running
processor's watcher; each starts a real retrain pass, audited with its trigger.

The retrains are given a hold-out of (nearly) every failed machine, so each pass ends at once
(rejected: too few machines left to train on) instead of training; the loop behind the trigger
is tested in test_retrain.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN, Reading, encode_readings
from pitstop.sim import shipped
from tests.conftest import admin_headers
from tests.test_deploy import reopen

FLEET = [f"eng-{u:03d}" for u in range(1, 11)]
QUICK = {"retrain_holdout": 0.99, "retrain_shadow_readings": 0}


def publish(platform: Platform, machine: str, unit: int, start: int, n: int, shift: dict[str, float]) -> None:
    rows = shipped("fd001_test").filter(unit=unit).sort("cycle").slice(start, n).to_dicts()
    t0 = datetime.now(UTC) - timedelta(days=1)
    batch = [
        Reading(
            machine_id=machine,
            ts=t0 + timedelta(minutes=int(r["cycle"])),
            seq=int(r["cycle"]),
            values={s: r[s] + shift.get(s, 0.0) for s in TURBOFAN.sensor_names},
        )
        for r in rows
    ]
    platform.bus.publish(encode_readings(batch, platform.lake.sensors))


def retrains(platform: Platform) -> list[dict[str, object]]:
    return [e["detail"] for e in platform.db.audit_entries(limit=50, action="retrain_started")]


def finished(platform: Platform, proc: Processor) -> list[str]:
    """Wait for the retrain pass to end; the actions that ended it."""
    proc.retrainer.join(60)
    assert not proc.retrainer.running
    return [e["action"] for e in platform.db.audit_entries(limit=50) if e["actor"] == "retrain"]


def test_a_drift_alert_in_the_stream_starts_a_retrain(trained: Platform) -> None:
    # a shift of the whole fleet, judged at once (drift_persist_windows=1): a distribution finding,
    # which retrains (a consistency finding alone, a faulty sensor, does not)
    platform = reopen(trained, retrain_on_drift=True, drift_window=50, drift_persist_windows=1, **QUICK)
    try:
        proc = Processor(platform)
        proc.bootstrap()
        asked: list[tuple[str, str | None]] = []  # what the monitor asked the real retrainer for
        start = proc.monitor.retrain
        proc.monitor.retrain = lambda why, machine_type: (
            asked.append((why, machine_type)) or start(why, machine_type)
        )
        shift = {"s3": 25.0}  # about five standard deviations of s3 (HPC outlet temperature)
        for b in range(6):  # one scored row per machine per batch: a window of 50 in five
            for u, machine in enumerate(FLEET, 1):
                publish(platform, machine, u, 10 * b, 10, shift)
            proc.run_once()
        alerts = platform.db.audit_entries(limit=50, action="drift_alert")
        assert "s3" in {a["detail"]["sensor"] for a in alerts}
        assert {a["detail"]["kind"] for a in alerts if a["detail"]["sensor"] == "s3"} == {"distribution"}
        assert asked == [("drift", "turbofan")]  # one retrain, of the type that drifted
        ended = finished(platform, proc)  # the pass runs on its own thread: its rows come with it
        assert retrains(platform) == [{"trigger": "drift", "machine_type": "turbofan"}]
        assert "retrain_rejected" in ended
    finally:
        platform.close()


def test_without_retrain_on_drift_the_same_alert_starts_nothing(trained: Platform) -> None:
    platform = reopen(trained, drift_window=50, **QUICK)
    try:
        proc = Processor(platform)
        proc.bootstrap()
        for b in range(6):
            for u, machine in enumerate(FLEET, 1):
                publish(platform, machine, u, 10 * b, 10, {"s3": 25.0})
            proc.run_once()
        assert platform.db.audit_entries(limit=50, action="drift_alert")
        assert retrains(platform) == [] and not proc.retrainer.running
    finally:
        platform.close()


def test_a_faulty_sensor_alerts_but_never_retrains(trained: Platform) -> None:
    # the same shift on two machines in ten, for many windows: the sensor disagrees with the
    # machine's others (a fault), which a retrain would only learn
    platform = reopen(trained, retrain_on_drift=True, drift_window=50, **QUICK)
    try:
        proc = Processor(platform)
        proc.bootstrap()
        for b in range(18):
            for u, machine in enumerate(FLEET, 1):
                publish(platform, machine, u, 10 * b, 10, {"s3": 25.0} if u <= 2 else {})
            proc.run_once()
        kinds = {a["detail"]["kind"] for a in platform.db.audit_entries(limit=50, action="drift_alert")}
        assert kinds and kinds <= {"consistency", "machine"}
        assert retrains(platform) == [] and not proc.retrainer.running
    finally:
        platform.close()


def test_a_failure_with_no_work_order_in_time_starts_a_retrain(trained: Platform) -> None:
    # a workshop that needs 150 cycles' notice: the work order opens, but too late
    platform = reopen(
        trained, retrain_on_performance=True, lead_time=150, work_order_rul_threshold=150, **QUICK
    )
    try:
        proc = Processor(platform)
        proc.bootstrap()
        # FD001 test unit 31: 196 cycles, 8 before its failure; one prediction per batch
        for start, n in ((0, 100), (100, 50), (150, 20), (170, 10), (180, 10), (190, 6)):
            publish(platform, "eng-031", 31, start, n, {})
            proc.run_once()
        assert retrains(platform) == []
        with TestClient(_app(platform, proc), headers=admin_headers(platform)) as client:
            last = proc.state.last["eng-031"]
            made = client.post(
                "/api/v1/admin/events", json={"machine_id": "eng-031", "kind": "failure", "seq": last + 8}
            )
            assert made.status_code == 201, made.text
        proc.run_once()  # the failure is scored between batches
        (scored,) = platform.db.audit_entries(limit=5, action="failure_scored")
        assert scored["detail"]["caught_in_time"] is False and scored["detail"]["predictions"] == 6
        ended = finished(platform, proc)  # the pass runs on its own thread: its rows come with it
        assert retrains(platform) == [{"trigger": "performance", "machine_type": "turbofan"}]
        assert "retrain_rejected" in ended
    finally:
        platform.close()


def test_the_schedule_starts_a_retrain_from_the_running_processor(trained: Platform) -> None:
    platform = reopen(trained, retrain_every_s=0.5, **QUICK)
    try:
        proc = Processor(platform)
        proc.start()
        try:
            deadline = time.monotonic() + 30
            while not retrains(platform):
                assert time.monotonic() < deadline, "the schedule never started a retrain"
                time.sleep(0.1)
        finally:
            proc.stop()
        assert retrains(platform)[-1] == {"trigger": "schedule", "machine_type": "turbofan"}
        assert "retrain_rejected" in finished(platform, proc)
    finally:
        platform.close()


def _app(platform: Platform, proc: Processor) -> object:
    from pitstop.web import create_app

    return create_app(platform, proc)
