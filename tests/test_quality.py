"""Live data quality: each check raises its alert once on a crafted batch stream and clears it once
after; healthy data raises none. Real metrics and a real ops DB (audit) under a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pitstop.monitoring import Metrics
from pitstop.monitoring.quality import QualityMonitor, QualityPolicy
from pitstop.schema import FleetSchema, parse_fleet
from pitstop.store import Database

FLEET = """
[machine_types.pump]
time_unit = "hours"
[[machine_types.pump.sensors]]
name = "temp"
unit = "C"
low = 0
high = 100
[[machine_types.pump.sensors]]
name = "flow"
unit = "l/s"
low = 0
high = 50
required = false
[[machine_types.pump.sensors]]
name = "gps"
unit = ""
low = -1000
high = 1000
informative = false
"""
POLICY = QualityPolicy(
    window=20, missing_rate=0.2, out_of_range_rate=0.1, stuck_readings=8, gap_factor=5, clock_skew_s=120
)
MINUTE_US = 60_000_000
T0 = 1_700_000_000_000_000


class Stream:
    """Batches of two machines' readings every minute, healthy unless a test bends them."""

    def __init__(self, fleet: FleetSchema, db: Database, policy: QualityPolicy = POLICY) -> None:
        self.fleet, self.db = fleet, db
        self.metrics = Metrics()
        self.monitor = QualityMonitor(policy, self.metrics, db.audit_many)
        self.rng = np.random.default_rng(0)
        self.seq = {"p1": 0, "p2": 0}
        self.ts = {"p1": T0, "p2": T0}

    def batch(self, n: int = 5, **bend: Any) -> pl.DataFrame:
        rows = []
        for machine in ("p1", "p2"):
            for _ in range(n):
                self.seq[machine] += 1
                self.ts[machine] += bend.get("gap", MINUTE_US) if machine == "p1" else MINUTE_US
                bad = machine == "p1" or bool(bend.get("both"))  # both: p2 bent like p1
                temp = bend["temp"] if bad and "temp" in bend else float(self.rng.normal(50, 5))
                flow = None if bad and bend.get("no_flow") else float(self.rng.normal(20, 2))
                reason = "temp out of range" if bad and bend.get("out_of_range") else None
                skew = bend.get("skew_us", 0) if bad else 0
                rows.append(
                    {
                        "machine_id": machine,
                        "ts": self.ts[machine],
                        "seq": self.seq[machine],
                        "quarantine": reason,
                        "received": None if bend.get("unstamped") else self.ts[machine] + 2_000_000 + skew,
                        "temp": temp,
                        "flow": flow,
                        "gps": 7.0,  # constant, and not informative: never "stuck"
                    }
                )
        if bend.get("backlog"):  # p1 sends its readings only after the last: the older ones wait
            sent = self.ts["p1"] + 2_000_000
            rows = [r | {"received": sent} if r["machine_id"] == "p1" else r for r in rows]
        frame = pl.DataFrame(rows).with_columns(
            pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.col("received").cast(pl.Datetime("us", "UTC"))
        )
        self.monitor.check(frame, self.fleet, {"p1": "pump", "p2": "pump"})
        return frame

    def audits(self) -> list[tuple[str, dict[str, Any]]]:
        rows = [e for e in self.db.audit_entries(500) if e["action"].startswith("quality_")]
        return [(e["action"], e["detail"]) for e in reversed(rows)]


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[Stream]:
    db = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    db.migrate()
    yield Stream(parse_fleet(FLEET), db)
    db.close()


def _healthy(stream: Stream, batches: int = 6) -> None:
    for _ in range(batches):
        stream.batch()


def test_healthy_data_raises_no_quality_alert(stream: Stream) -> None:
    _healthy(stream, 12)
    assert stream.audits() == []
    assert stream.monitor.alerts == {}


@pytest.mark.parametrize(
    ("check", "bend", "expect"),
    [
        ("missing", {"no_flow": True}, {"sensor": "flow", "machine_type": "pump"}),
        ("out_of_range", {"out_of_range": True}, {"machine_type": "pump"}),
        ("stuck", {"temp": 42.0}, {"sensor": "temp", "machine_id": "p1"}),
        ("gap", {"gap": 30 * MINUTE_US}, {"machine_id": "p1"}),
        ("clock_skew", {"skew_us": -10 * MINUTE_US}, {"machine_id": "p1"}),
        ("clock_skew", {"skew_us": 10 * MINUTE_US}, {"machine_id": "p1"}),  # a clock behind
    ],
)
def test_each_check_alerts_once_and_clears_once(
    stream: Stream, check: str, bend: dict[str, Any], expect: dict[str, str]
) -> None:
    _healthy(stream)
    for _ in range(4):  # a lasting problem: alerted once, not once per batch
        stream.batch(**bend)
    _healthy(stream, 6)
    audits = stream.audits()
    assert [a for a, _ in audits] == ["quality_alert", "quality_cleared"], audits
    (_, raised), (_, cleared) = audits
    assert raised["check"] == cleared["check"] == check
    assert {k: raised[k] for k in expect} == expect
    assert set(raised) == set(cleared)
    assert set(raised) <= {"machine_type", "check", "sensor", "machine_id", "value", "threshold"}
    if check == "clock_skew":  # ten minutes off, 2 s in transit
        assert raised["value"] == pytest.approx((bend["skew_us"] + 2_000_000) / 1e6)
    assert stream.monitor.alerts == {}


def test_an_alert_storm_is_one_commit_and_one_not_recorded_is_raised_again(stream: Stream) -> None:
    """Both machines stuck at once: their alerts go to the ops DB in one call (one transaction),
    and while that write fails nothing counts as raised, so a later batch raises them again."""
    written: list[list[tuple[str, str, dict[str, Any]]]] = []
    record = stream.db.audit_many
    failing = [True]

    def audit_many(entries: list[tuple[str, str, dict[str, Any]]]) -> None:
        if failing[0] and entries:
            raise OSError("ops DB down")
        record(entries)
        written.append(entries)

    stream.monitor.audit_many = audit_many
    _healthy(stream)
    failures = 0
    for _ in range(4):
        try:
            stream.batch(temp=42.0, both=True)
        except OSError:  # the processor's LiveMonitor logs it and goes on
            failures += 1
    assert failures >= 2
    assert stream.monitor.alerts == {} and stream.audits() == []
    failing[0] = False
    stream.batch(temp=42.0, both=True)
    stuck = [d for a, d in stream.audits() if a == "quality_alert" and d["check"] == "stuck"]
    assert sorted(d["machine_id"] for d in stuck) == ["p1", "p2"]
    assert {k[3] for k in stream.monitor.alerts if k[1] == "stuck"} == {"p1", "p2"}
    together = [e for e in written if {d.get("check") for _, _, d in e} == {"stuck"}]
    assert [sorted(d["machine_id"] for *_, d in e) for e in together] == [["p1", "p2"]]


def test_one_bad_reading_does_not_alert_a_rate(stream: Stream) -> None:
    stream.batch(n=1, out_of_range=True)  # one reading, before a window is full
    _healthy(stream, 8)
    assert stream.audits() == []


def test_metrics_carry_the_machine_type(stream: Stream) -> None:
    _healthy(stream)
    for _ in range(4):
        stream.batch(no_flow=True, temp=42.0)
    text = stream.metrics.render().decode()
    assert 'pitstop_quality_missing_rate{machine_type="pump",sensor="flow"}' in text
    assert 'pitstop_quality_stuck_sensors{machine_type="pump",sensor="temp"} 1.0' in text
    assert 'pitstop_quality_alerts{check="stuck",machine_type="pump"} 1.0' in text
    assert 'pitstop_quality_out_of_range_rate{machine_type="pump"} 0.0' in text


def test_a_sensor_constant_in_the_training_profile_is_not_stuck(stream: Stream) -> None:
    stream.monitor.learn_profile("pump", {"temp__mean_5": {"std": 0.0}, "temp__std_5": {"std": 0.0}})
    _healthy(stream)
    for _ in range(4):
        stream.batch(temp=42.0)
    assert [d["check"] for _, d in stream.audits()] == []


def test_readings_without_an_arrival_time_are_not_checked_for_skew(stream: Stream) -> None:
    _healthy(stream)
    for _ in range(4):  # from tools, or on the bus from before intake stamped arrivals
        stream.batch(skew_us=-10 * MINUTE_US, unstamped=True)
    assert stream.audits() == []


def test_a_backlog_sent_late_is_not_clock_skew(stream: Stream) -> None:
    _healthy(stream)
    for _ in range(4):  # the oldest readings of each batch arrive 4 minutes after their time
        stream.batch(n=5, backlog=True)
    assert stream.audits() == []


def test_a_replay_of_history_catching_up_is_not_clock_skew(stream: Stream) -> None:
    _healthy(stream)
    for b in range(6):  # a month behind, an hour of readings a minute: the lag shrinks every batch
        stream.batch(gap=60 * MINUTE_US, skew_us=(30 * 24 * 60 - b * 5 * 59) * MINUTE_US)
    assert "clock_skew" not in {d["check"] for _, d in stream.audits()}


def test_the_processor_checks_quality_on_what_intake_stamped(tmp_path: Path) -> None:
    """End to end: intake's validation stamps arrival, the processor runs the checks on each batch,
    and the arrival stamp never reaches the lake."""
    from datetime import UTC, datetime, timedelta

    from pitstop.ingest.devices import DeviceRegistry
    from pitstop.ingest.validate import validate_batch
    from pitstop.platform import Platform
    from pitstop.processor import Processor
    from pitstop.schema import TURBOFAN, encode_table
    from tests.conftest import make_settings

    p = Platform.open(make_settings(tmp_path / "data", quality_stuck_readings=5, quality_clock_skew_s=60))
    try:
        DeviceRegistry(p.db).add("eng-1", "turbofan", p.fleet)
        ahead = datetime.now(UTC) + timedelta(minutes=10)  # the device's clock runs 10 minutes fast
        middle = {s.name: (s.low + s.high) / 2 for s in TURBOFAN.sensors}
        readings = [
            {
                "machine_id": "eng-1",
                "seq": i,
                "ts": (ahead + timedelta(seconds=i)).isoformat(),
                "values": middle,
            }
            for i in range(1, 9)
        ]
        batch = validate_batch(
            readings,
            TURBOFAN,
            p.lake.sensors,
            machine_id="eng-1",
            last_seq=0,
            max_readings=100,
            horizon=ahead + timedelta(hours=1),
        )
        assert batch.table is not None and batch.table["received"].null_count == 0
        p.bus.publish(encode_table(batch.table))
        Processor(p).run_once()
        raised = {e["detail"]["check"] for e in p.db.audit_entries(100, "quality_alert")}
        assert raised == {"stuck", "clock_skew"}
        assert "received" not in p.lake.columns("telemetry")
        assert p.lake.read("telemetry", columns=["seq"]).height == 8
    finally:
        p.close()


@pytest.mark.parametrize("stuck_rows", [None, 7])
def test_stuck_runs_match_a_reading_by_reading_count_over_any_batching(
    stream: Stream, stuck_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The columnar run lengths equal the plain loop's, whatever the batch boundaries, with missing
    values (which neither break nor extend a run) and machines interleaved; also a few machines
    at a time within a batch (``stuck_rows``)."""
    if stuck_rows is not None:
        monkeypatch.setattr("pitstop.monitoring.quality.STUCK_ROWS", stuck_rows)
    rng = np.random.default_rng(7)
    n = 400
    machines = rng.choice(["a", "b", "c"], n)
    temp = rng.choice([1.0, 2.0, np.nan], n, p=[0.6, 0.2, 0.2])
    temp[100:180] = 3.0  # a long run
    temp[250:] = 5.0  # runs that last to the end, across many batches,
    temp[250::3] = np.nan  # with gaps in them
    flow = rng.choice([7.0, 8.0, np.nan], n, p=[0.3, 0.3, 0.4])  # a second sensor, its own runs
    flow[:60] = 9.0
    flow[300:] = np.nan  # missing to the end: its runs stop where they were

    def reference(values: np.ndarray) -> dict[str, tuple[float | None, int]]:
        expected: dict[str, tuple[float | None, int]] = {}
        for m, v in zip(machines, values, strict=True):
            last, run = expected.get(m, (None, 0))
            if not np.isnan(v):
                last, run = (last, run + 1) if v == last else (float(v), 1)
            expected[m] = (last, run)
        return expected

    fleet = parse_fleet(FLEET)
    cuts = np.sort(rng.choice(np.arange(1, n), 25, replace=False))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
        frame = pl.DataFrame(
            {
                "machine_id": machines[lo:hi],
                "temp": temp[lo:hi],
                "flow": flow[lo:hi],
                "quarantine": [None] * (hi - lo),
            },
            schema_overrides={"quarantine": pl.String},
        ).with_columns(pl.col("temp", "flow").fill_nan(None))
        stream.monitor._stuck(fleet.type_of("pump"), frame)
    runs = stream.monitor._runs["pump"]
    for j, values in enumerate([temp, flow]):  # the type's informative sensors: temp, flow
        got = {m: (float(last[j]), int(run[j])) for m, (last, run) in runs.items() if not np.isnan(last[j])}
        assert got == {m: (last, run) for m, (last, run) in reference(values).items() if last is not None}
