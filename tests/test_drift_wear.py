"""Drift that tells wear from faults, through the real processor on the demo's live fleet.

The demo's fleet (the FD001 test engines, joined part-way through their lives and staggered by
remaining life) is replayed at its default pace: one reading per engine per second, one
micro-batch per second, for ten minutes (600 batches; the recordings end before that).

- Healthy, it wears (engines near their end of life, others young) and raises no drift alert.
- With a calibration offset of 3 standard deviations on one sensor of a tenth of the engines, it
  alerts on that sensor, and on nothing else, within one drift window of the fault.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import func, select

from pitstop.demo import live_feeds, live_id
from pitstop.monitoring.monitor import DriftReport, Finding
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN, Reading, encode_readings
from pitstop.store import WorkOrder

pytestmark = pytest.mark.slow

FAULT_STEP = 30  # seconds into the replay
FAULTY = [live_id(unit) for unit in range(1, 101, 10)]  # a tenth of the fleet
SENSOR = "s3"


def replay_demo(
    platform: Platform, offset: float = 0.0, seconds: int = 600
) -> tuple[Processor, int, list[tuple[str, list[str]]]]:
    """The demo's live fleet replayed through the bus and the processor, one batch a second;
    ``offset`` is added to ``SENSOR`` of the ``FAULTY`` engines from ``FAULT_STEP`` on. Returns the
    processor, the rows it scored before the fault, and each drift check (scope, alerts raised)."""
    feeds = live_feeds({live_id(unit): "" for unit in range(1, 101)})
    sensors = TURBOFAN.sensor_names
    start = datetime.now(UTC) - timedelta(seconds=seconds + max(len(f.seqs) for f in feeds))
    proc = Processor(platform)
    proc.bootstrap()
    checks: list[tuple[str, list[str]]] = []
    record = proc.drift.on_report
    assert record is not None

    def on_report(report: DriftReport, raised: dict[str, Finding], cleared: dict[str, Finding]) -> None:
        checks.append((report.scope, sorted(raised)))
        record(report, raised, cleared)

    proc.drift.on_report = on_report
    scored_before_fault = 0
    for step in range(seconds):
        batch = []
        for feed in feeds:
            first, last = (0, feed.head_start + 1) if step == 0 else (feed.head_start + step,) * 2
            for i in range(first, min(max(last, first + 1), len(feed.seqs))):
                values = {s: float(feed.values[i][s]) for s in sensors}
                if step >= FAULT_STEP and feed.machine_id in FAULTY:
                    values[SENSOR] += offset
                batch.append(
                    Reading(
                        machine_id=feed.machine_id,
                        ts=start + timedelta(seconds=step + i * 1e-3),
                        seq=feed.seqs[i],
                        values=values,
                    )
                )
        if not batch:
            break  # every recording has ended
        platform.bus.publish(encode_readings(batch, platform.lake.sensors))
        report = proc.run_once()
        if step < FAULT_STEP:
            scored_before_fault += report.scored
    return proc, scored_before_fault, checks


def drift_alerts(platform: Platform) -> list[dict[str, object]]:
    return [e["detail"] for e in reversed(platform.db.audit_entries(10_000, "drift_alert"))]


def test_a_healthy_wearing_demo_fleet_raises_no_drift_alert_in_ten_minutes(trained: Platform) -> None:
    _, _, checks = replay_demo(trained)
    windows = [scope for scope, _ in checks if scope == "type:turbofan"]
    assert len(windows) >= 10, "the replay filled too few drift windows to mean anything"
    assert drift_alerts(trained) == []
    assert all(raised == [] for _, raised in checks)
    # the fleet did wear: engines came near the end of their lives and work orders opened
    with trained.db.session() as s:
        assert s.scalar(select(func.count()).select_from(WorkOrder)) >= 10


def test_an_offset_sensor_on_a_tenth_of_the_fleet_alerts_on_that_sensor_only_within_one_window(
    trained: Platform,
) -> None:
    telemetry = trained.lake.read("telemetry", columns=["machine_id", SENSOR]).filter(
        pl.col("machine_id").str.starts_with("hist")
    )
    sigma = float(telemetry[SENSOR].std())  # type: ignore[arg-type]
    _, before, checks = replay_demo(trained, offset=3 * sigma, seconds=120)
    alerts = drift_alerts(trained)
    assert alerts, "no alert for the offset sensor"
    assert {a["sensor"] for a in alerts} == {SENSOR}  # that sensor, nothing else
    first = alerts[0]
    assert first["kind"] == "consistency"
    assert set(first["machines"]) <= set(FAULTY)  # type: ignore[arg-type]
    assert len(first["machines"]) >= len(FAULTY) // 2  # type: ignore[arg-type]
    # within one window: the window the fault began in, or the next, raised it
    windows = [raised for scope, raised in checks if scope == "type:turbofan"]
    began_in = before // trained.settings.drift_window
    assert 0 < began_in < len(windows) - 1
    first_alert = next(i for i, raised in enumerate(windows) if raised)
    assert first_alert in (began_in, began_in + 1)
    assert windows[first_alert] == [SENSOR]
