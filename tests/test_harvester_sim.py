"""The orange-harvester simulator: deterministic, irregular and gappy like a real fleet, with
components that wear out, fail and are renewed, within the ranges of its fleet file."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pitstop.assistant.knowledge import KnowledgeBase
from pitstop.schema import MachineType, shipped_fleet
from pitstop.sim.harvester import (
    HARVESTER_COMPONENTS,
    HarvesterHistory,
    LiveHarvesters,
    simulate,
    write_history,
)

COLUMNS = ["machine_id", "ts"]


@pytest.fixture(scope="module")
def history() -> HarvesterHistory:
    return simulate(8, 365, seed=3)


@pytest.fixture(scope="module")
def harvester() -> MachineType:
    return shipped_fleet("harvesters").type_of("harvester")


def _gaps(readings: pl.DataFrame) -> pl.Series:
    """Minutes between a machine's consecutive readings."""
    minutes = (pl.col("ts").diff().dt.total_seconds() / 60).over("machine_id")
    return readings.sort("machine_id", "ts").select(minutes.alias("gap"))["gap"].drop_nulls()


def test_a_seed_gives_the_same_fleet_and_another_seed_another() -> None:
    a, b = simulate(2, 30, seed=5), simulate(2, 30, seed=5)
    assert a.readings.equals(b.readings)
    assert a.events.equals(b.events)
    assert not simulate(2, 30, seed=6).readings.equals(a.readings)


def test_a_machine_is_the_same_machine_whatever_the_fleet_size() -> None:
    small, large = simulate(2, 30, seed=5), simulate(4, 30, seed=5)
    assert large.readings.filter(pl.col("machine_id").is_in(["H-001", "H-002"])).equals(small.readings)


def test_readings_come_about_every_ten_minutes_irregularly_with_gaps_of_hours(
    history: HarvesterHistory,
) -> None:
    gaps = _gaps(history.readings)
    assert (gaps > 0).all()  # strictly increasing per machine
    running = gaps.filter(gaps < 60)
    assert 9 < running.median() < 11  # type: ignore[operator]
    assert running.std() > 1.5  # type: ignore[operator]
    assert (gaps > 8 * 60).sum() > 8 * 100  # nights
    assert gaps.max() > 60 * 24 * 60  # type: ignore[operator]  # the off-season lay-up
    ts = history.readings["ts"]
    assert ts.dt.hour().is_between(6, 21).all()  # two shifts, 06-22, nothing at night
    assert not ts.dt.month().is_in([7, 8, 9]).any()


def test_the_optional_sensor_has_gaps_and_required_ones_none(
    history: HarvesterHistory, harvester: MachineType
) -> None:
    readings = history.readings
    optional = set(harvester.sensor_names) - harvester.required
    assert optional == {"hydraulic_temp_c"}
    for name in harvester.required:
        assert readings[name].null_count() == 0, name
    share = readings.group_by("machine_id").agg(pl.col("hydraulic_temp_c").is_null().mean().alias("missing"))
    missing = share["missing"]
    assert (missing == 1).any()  # a machine without the sensor
    assert ((missing > 0) & (missing < 0.5)).any()  # a machine that drops it for stretches


def test_at_least_three_components_fail_and_machines_run_again_after_repair(
    history: HarvesterHistory,
) -> None:
    readings, events = history.readings.sort("machine_id", "ts"), history.events
    failures = events.filter(pl.col("kind") == "failure").sort("machine_id", "ts")
    assert set(failures["component"]) <= set(HARVESTER_COMPONENTS)
    assert len(set(failures["component"])) >= 3
    assert failures.group_by("machine_id").len()["len"].max() >= 2  # type: ignore[operator]  # third lives
    stamps = readings.select("machine_id", pl.col("ts").alias("reading_ts"))
    before = failures.join_asof(
        stamps, left_on="ts", right_on="reading_ts", by="machine_id", check_sortedness=False
    )
    waited = (before["ts"] - before["reading_ts"]).dt.total_seconds()
    assert ((waited >= 0) & (waited <= 10 * 60)).all()  # the failure follows its life's last reading
    after = failures.join_asof(
        stamps,
        left_on="ts",
        right_on="reading_ts",
        by="machine_id",
        strategy="forward",
        check_sortedness=False,
    )
    repaired = after.filter(pl.col("reading_ts").is_not_null())
    assert repaired.height >= 0.8 * failures.height
    assert ((repaired["reading_ts"] - repaired["ts"]).dt.total_seconds() >= 3600).all()  # repairs take hours
    kinds = set(events["kind"])
    assert kinds == {"failure", "maintenance", "inspection"}
    assert events.filter(pl.col("kind") != "inspection")["component"].null_count() == 0


@pytest.mark.parametrize(
    ("component", "sensor", "direction"),
    [
        ("head_bearing", "shaker_vibration_mm_s", 1),
        ("hydraulic_pump", "hydraulic_pressure_bar", -1),
        ("fuel_injectors", "exhaust_temp_c", 1),
        ("drive_belt", "drive_slip_pct", 1),
    ],
)
def test_wear_shows_in_the_components_sensors_before_it_fails(
    history: HarvesterHistory, component: str, sensor: str, direction: int
) -> None:
    picking = history.readings.filter(pl.col("load_mode") == 0).sort("machine_id", "ts")
    failures = history.events.filter((pl.col("kind") == "failure") & (pl.col("component") == component))
    if failures.height == 0:
        pytest.skip(f"no {component} failure in this fleet")
    labelled = picking.join_asof(
        failures.select("machine_id", pl.col("ts").alias("failed_at")),
        left_on="ts",
        right_on="failed_at",
        by="machine_id",
        strategy="forward",
        check_sortedness=False,
    ).with_columns(hours_left=(pl.col("failed_at") - pl.col("ts")).dt.total_hours())
    near = labelled.filter(pl.col("hours_left") < 24)[sensor].mean()
    typical = picking[sensor].median()
    assert isinstance(near, float) and isinstance(typical, float)
    assert direction * (near - typical) > 0.1 * typical


def test_values_stay_within_the_fleet_file_ranges(history: HarvesterHistory, harvester: MachineType) -> None:
    readings = history.readings
    in_range = pl.all_horizontal(
        pl.col(s.name).is_null() | pl.col(s.name).is_between(s.low, s.high) for s in harvester.sensors
    )
    assert readings.select(in_range.mean()).item() >= 0.995
    for s in harvester.sensors:
        values = readings[s.name].drop_nulls()
        assert values.is_finite().all(), s.name
        assert values.is_between(s.low, s.high).mean() >= 0.995, s.name  # type: ignore[operator]


def test_the_fleet_file_declares_exactly_what_the_simulator_emits(
    history: HarvesterHistory, harvester: MachineType
) -> None:
    assert history.readings.columns == [*COLUMNS, *harvester.sensor_names]
    assert all(history.readings[s].dtype == pl.Float64 for s in harvester.sensor_names)
    assert history.readings["ts"].dtype == pl.Datetime("us", "UTC")
    assert harvester.time_unit == "hours"
    assert set(harvester.settings) == {"load_mode", "terrain_slope_pct"}
    assert tuple(harvester.component_names) == HARVESTER_COMPONENTS
    policy = harvester.policy
    assert policy["threshold"] >= policy["lead_time"]


def test_the_manual_has_the_sections_and_procedures_the_fleet_file_names(harvester: MachineType) -> None:
    manual = KnowledgeBase.shipped()
    anchors = {f"{s.source}#{s.anchor}" for s in manual.sections}
    titles = " ".join(s.title for s in manual.sections if s.source == "harvester-maintenance.md")
    for component in harvester.components:
        assert component.manual in anchors, component.name
        for procedure in component.procedures.values():
            for code in (word for word in procedure.split() if word.startswith("H-")):
                assert f"Procedure {code}:" in titles, (component.name, code)


def test_write_history_round_trips_through_csv(tmp_path: Path) -> None:
    history = simulate(3, 20, seed=1)
    readings_path, events_path = write_history(history, tmp_path / "out")
    assert readings_path.name == "readings.csv" and events_path.name == "events.csv"
    assert readings_path.read_text().splitlines()[1].split(",")[1].endswith("Z")
    sensors = history.readings.columns[2:]
    readings = pl.read_csv(
        readings_path, try_parse_dates=True, schema_overrides=dict.fromkeys(sensors, pl.Float64)
    )
    assert readings.columns == [*COLUMNS, *sensors]
    assert readings.equals(history.readings)
    assert history.readings["hydraulic_temp_c"].null_count() > 0
    events = pl.read_csv(events_path, try_parse_dates=True, schema_overrides={"component": pl.String})
    assert events.columns == ["machine_id", "ts", "kind", "component", "detail"]
    assert events.equals(history.events)


def test_the_live_fleet_streams_increasing_readings_and_the_events_behind_them() -> None:
    live = LiveHarvesters(3, seed=2, start=datetime(2025, 6, 25, tzinfo=UTC))
    seen: dict[str, list[dict[str, Any]]] = {m: [] for m in live.machine_ids}
    events = []
    for _ in range(6):  # across the summer lay-up
        for reading in live.next_readings(100):
            seen[reading["machine_id"]].append(reading)
        events.extend(live.next_events())
    for machine_id, readings in seen.items():
        assert [r["seq"] for r in readings] == list(range(600)), machine_id
        stamps = [r["ts"] for r in readings]
        assert all(isinstance(t, datetime) and t.tzinfo is not None for t in stamps)
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        for r in readings:
            values = r["values"]
            assert isinstance(values, dict)
            assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
    assert {e["kind"] for e in events} <= {"failure", "maintenance", "inspection"}
    assert any(e["kind"] == "maintenance" for e in events)  # the off-season overhaul
    for e in events:
        latest = seen[e["machine_id"]][-1]["ts"]
        assert isinstance(latest, datetime) and e["ts"] <= latest
