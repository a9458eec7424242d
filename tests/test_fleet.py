"""Any fleet by configuration: fleet files, a type added to a running data dir, labels in hours,
and a fleet of two types scored per type through the processor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from sqlalchemy import func

from pitstop.cli import cli
from pitstop.fleetops import apply_fleet
from pitstop.ingest import DeviceRegistry, Intake
from pitstop.ingest.history import import_readings
from pitstop.ingest.history_events import import_events
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN, FleetError, decode_table, default_fleet, parse_fleet
from pitstop.schema.fleetfile import shipped_fleet_path
from pitstop.store import Machine, Prediction
from pitstop.training import rul_labels
from pitstop.training.pipeline import train_and_register
from tests import pumpfleet
from tests.conftest import make_settings

TURBOFAN_TOML = shipped_fleet_path("turbofan").read_text()


def test_fleet_check_names_the_type_the_field_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        """
[machine_types.pump]
time_unit = "weeks"
[[machine_types.pump.sensors]]
name = "flow"
low = 10
high = 1
[[machine_types.pump.sensors]]
name = "flow"
low = 0
high = 1
role = "knob"
[[machine_types.pump.components]]
name = "seal"
sensors = ["pressure"]
"""
    )
    result = CliRunner().invoke(cli, ["fleet", "check", str(bad)])
    assert result.exit_code == 2
    for expected in (
        "pump.time_unit: must be one of cycles, seconds, minutes, hours, days (got 'weeks')",
        "pump.sensors[0] (flow).high: must be above low (10)",
        "pump.sensors[1] (flow).name: declared twice",
        "pump.components[0] (seal).sensors: 'pressure' is not a sensor of this type",
    ):
        assert expected in result.output
    with pytest.raises(FleetError) as caught:
        parse_fleet(bad.read_text())
    assert {"machine_type": "pump", "field": "time_unit"}.items() <= caught.value.details[0].items()
    ok = CliRunner().invoke(cli, ["fleet", "check", str(shipped_fleet_path("harvesters"))])
    assert ok.exit_code == 0, ok.output
    # a policy the platform could not build (the default threshold 35 under a lead time of 48)
    # would lock the data dir at its next start: refused by check (and apply)
    late = tmp_path / "late.toml"
    late.write_text(pumpfleet.FLEET_TOML.replace("lead_time = 24\nthreshold = 72\n", "lead_time = 48\n"))
    refused = CliRunner().invoke(cli, ["fleet", "check", str(late)])
    assert (
        refused.exit_code == 2
        and "pump.policy: work-order threshold 35 is below the lead time 48" in refused.output
    )
    applied = CliRunner().invoke(cli, ["fleet", "apply", str(late), "--data-dir", str(tmp_path / "data")])
    assert applied.exit_code == 2 and "invalid_fleet" in applied.output
    odd = tmp_path / "odd.toml"
    odd.write_text(pumpfleet.FLEET_TOML + '[machine_types.pump.features]\newma_alphas = 0.3\ndelta = "no"\n')
    result = CliRunner().invoke(cli, ["fleet", "check", str(odd)])
    assert result.exit_code == 2 and "pump.features.ewma_alphas" in result.output
    assert "pump.features.delta: must be true or false" in result.output


def test_the_issue_example_is_a_valid_fleet_file() -> None:
    fleet = parse_fleet(pumpfleet.FLEET_TOML)
    pump = fleet.type_of("pump")
    assert pump.unit_seconds == 3600 and pump.settings == ["speed_rpm", "valve_pct"]
    assert "seal_leak" not in pump.required and pump.component_names == ["bearing", "seal"]
    assert TURBOFAN.feature_spec.hash == default_fleet().feature_spec.hash


def test_labels_in_hours_count_the_time_to_failure_across_downtime() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    hours = [0.0, 1.0, 2.5, 30.0, 31.0, 40.0]  # a day of downtime after 2.5 h
    rows = pl.DataFrame(
        {
            "machine_id": ["p"] * 6 + ["q"] * 2,
            "ts": [t0 + timedelta(hours=h) for h in hours] + [t0, t0 + timedelta(hours=100)],
            "seq": [1, 2, 3, 4, 5, 6, 1, 2],
        }
    )
    events = pl.DataFrame(
        {
            "machine_id": ["p", "q"],
            "ts": [t0 + timedelta(hours=41), t0 + timedelta(hours=120)],
            "kind": ["failure", "maintenance"],
            "seq": [None, None],
            "component": ["bearing", None],
        }
    )
    labels = rul_labels(rows, events, cap=None, horizon=10, unit_seconds=3600.0).sort("machine_id", "seq")
    p = labels.filter(machine_id="p")
    assert p["rul"].to_list() == [41.0, 40.0, 38.5, 11.0, 10.0, 1.0]
    assert p["fails_within"].to_list() == [False, False, False, False, True, True]
    assert set(p["failure_component"].to_list()) == {"bearing"}
    q = labels.filter(machine_id="q")
    # censored by the maintenance: alive 120 h and 20 h after its readings, uncapped, so unknown
    assert q.height == 0
    capped = rul_labels(rows, events, cap=100, horizon=10, unit_seconds=3600.0).filter(machine_id="q")
    assert capped["rul"].to_list() == [100.0]  # the bound reaches the cap: the label is known
    assert capped["censored"].to_list() == [True]


def _import(platform: Platform, history: pumpfleet.PumpHistory, folder: Path) -> None:
    readings, events = pumpfleet.write(folder, history)
    import_readings(
        [readings],
        lake=platform.lake,
        db=platform.db,
        fleet=platform.fleet,
        max_future_skew_s=300,
        machine_type="pump",
    )
    import_events(events, lake=platform.lake, db=platform.db, fleet=platform.fleet, max_future_skew_s=300)


def test_a_type_added_to_a_running_data_dir_loses_nothing(trained: Platform, tmp_path: Path) -> None:
    """The trained turbofan deployment gains a pump type: columns are added without rewriting a
    row, turbofan readings and their values are intact, the new type's history imports, and a
    sensor with data cannot be removed."""
    data = trained.settings.data_dir
    before = trained.lake.read("telemetry").sort("machine_id", "seq")
    both = tmp_path / "fleet.toml"
    both.write_text(TURBOFAN_TOML + pumpfleet.FLEET_TOML)
    applied = CliRunner().invoke(cli, ["fleet", "apply", str(both), "--data-dir", str(data)])
    assert applied.exit_code == 0, applied.output
    result = json.loads(applied.output.strip().splitlines()[-1])
    assert result["change"]["added_types"] == ["pump"]
    assert set(result["lake_columns"]) == set(pumpfleet.SENSORS)

    platform = Platform.open(make_settings(data))
    try:
        after = platform.lake.read("telemetry").sort("machine_id", "seq")
        assert after.height == before.height
        assert after.select(before.columns).equals(before)
        assert after.select(pumpfleet.SENSORS).null_count().row(0) == (before.height,) * len(
            pumpfleet.SENSORS
        )
        assert platform.lake.history("telemetry", 1)[0]["operation"] in ("ADD COLUMN", "add column")
        _import(platform, pumpfleet.simulate(3, 300, seed=5), tmp_path / "pumps")
        assert platform.lake.read("telemetry", machine_ids=["P000"]).height > 100
        shown = CliRunner().invoke(cli, ["fleet", "show", "--data-dir", str(data)])
        assert json.loads(shown.output)["machine_types"]["pump"]["time_unit"] == "hours"
    finally:
        platform.close()

    removed = tmp_path / "less.toml"
    removed.write_text((TURBOFAN_TOML + pumpfleet.FLEET_TOML).replace('"vibration"', '"vibes"'))
    refused = CliRunner().invoke(cli, ["fleet", "apply", str(removed), "--data-dir", str(data)])
    assert refused.exit_code == 2
    assert "fleet_change_refused" in refused.output and "pump.sensors (vibration)" in refused.output
    only_pumps = tmp_path / "pumps.toml"
    only_pumps.write_text(pumpfleet.FLEET_TOML)
    refused = CliRunner().invoke(cli, ["fleet", "apply", str(only_pumps), "--data-dir", str(data)])
    assert refused.exit_code == 2 and "cannot remove a machine type with" in refused.output
    history = CliRunner().invoke(cli, ["fleet", "show", "--history", "--data-dir", str(data)])
    assert [v["version"] for v in json.loads(history.output)["history"]] == [1]
    assert trained.db.audit_entries(action="fleet_applied")[0]["detail"]["added_types"] == ["pump"]


@pytest.mark.slow
def test_two_machine_types_are_each_scored_by_their_own_model_under_load(tmp_path: Path) -> None:
    """Pumps and turbofans in one data dir, one model each; readings of both interleaved through
    the real intake in many micro-batches: every reading lands once, every prediction is made by
    the machine's own type's model, the drift windows stay per type."""
    from pitstop.demo import seed_last_season

    fleet = parse_fleet(TURBOFAN_TOML + pumpfleet.FLEET_TOML)
    settings = make_settings(
        tmp_path / "data", intake_workers=0, device_rate_limit=1e6, device_rate_burst=10**6
    )
    platform = Platform.open(settings, fleet=fleet)
    try:
        apply_fleet(platform.db, platform.lake, fleet, fleet, origin="test")
        seed_last_season(platform, lambda _: None)
        _import(platform, pumpfleet.simulate(16, 2500, seed=1), tmp_path / "pumps")
        turbofan = train_and_register(platform, machine_type="turbofan")
        pump = train_and_register(platform, machine_type="pump")
        assert turbofan.bundle.spec.hash != pump.bundle.spec.hash

        live = pumpfleet.simulate(4, 400, seed=9, prefix="LP")
        devices = DeviceRegistry(platform.db)
        tokens = {}
        for machine_id, machine_type in [
            *((f"LT{i}", "turbofan") for i in range(4)),
            *((str(m), "pump") for m in live.readings["machine_id"].unique().sort()),
        ]:
            with platform.db.session() as s:
                s.add(
                    Machine(
                        machine_id=machine_id,
                        machine_type=machine_type,
                        status="active",
                        installed_at=datetime.now(UTC),
                        created_at=datetime.now(UTC),
                    )
                )
            _, tokens[machine_id] = devices.add(machine_id)
        intake = Intake(platform)
        processor = Processor(platform)
        processor.bootstrap()
        from pitstop.sim import shipped

        engines = shipped("fd001_test")
        start = datetime.now(UTC) - timedelta(days=30)
        sent = 0
        for step in range(12):  # 12 rounds: every machine posts a batch, then a micro-batch runs
            for i in range(4):
                rows = engines.filter(pl.col("unit") == i + 1).sort("cycle").slice(step * 10, 10)
                batch = [
                    {
                        "machine_id": f"LT{i}",
                        "ts": (start + timedelta(minutes=int(r["cycle"]))).isoformat(),
                        "seq": int(r["cycle"]),
                        "values": {s: r[s] for s in TURBOFAN.sensor_names},
                    }
                    for r in rows.to_dicts()
                ]
                if batch:
                    intake.submit(intake.authenticate(tokens[f"LT{i}"]), batch)
                    sent += len(batch)
            for (machine_id,), group in live.readings.group_by("machine_id", maintain_order=True):
                part = group.sort("ts").slice(step * 25, 25)
                batch = [
                    {
                        "machine_id": machine_id,
                        "ts": (start + timedelta(hours=k + step * 25)).isoformat(),
                        "seq": step * 25 + k + 1,
                        "values": {s: v for s, v in r.items() if s in pumpfleet.SENSORS and v is not None},
                    }
                    for k, r in enumerate(part.to_dicts())
                ]
                if batch:
                    intake.submit(intake.authenticate(tokens[str(machine_id)]), batch)
                    sent += len(batch)
            processor.run_once()
        while processor.lag() > 0:
            processor.run_once()
        intake.close()
        live_ids = list(tokens)
        assert (
            platform.lake.read("telemetry", columns=["machine_id", "seq"], machine_ids=live_ids).height
            == sent
        )
        with platform.db.session() as s:
            made = {(m, name) for m, name in s.query(Prediction.machine_id, Prediction.model_name)}
        assert {name for m, name in made if m.startswith("LT")} == {"pitstop-rul-turbofan"}
        assert {name for m, name in made if m.startswith("LP")} == {"pitstop-rul-pump"}
        assert {m for m, _ in made} == set(live_ids)
        assert set(processor.lanes) == {"turbofan", "pump"}
        assert all(lane.online is not None for lane in processor.lanes.values())
        assert "fleet" not in processor.drift._windows  # two types: type scopes only
        pump_state = processor.lanes["pump"].online
        assert pump_state is not None and np.isfinite(pump_state.get(["LP000"])).all()

        # one type's model breaks: its machines go unscored (audited), the other type's are scored
        def broken(ids: list[str], features: np.ndarray) -> None:
            raise RuntimeError("the turbofan model is broken")

        processor.lanes["turbofan"].deployment.score = broken  # type: ignore[method-assign,assignment]
        with platform.db.session() as s:
            before = {
                m: n for m, n in s.query(Prediction.machine_id, func.count()).group_by(Prediction.machine_id)
            }
        intake = Intake(platform)
        for machine_id in ("LT0", "LP000"):
            seq = processor.state.last[machine_id]
            values = (
                {s: float(engines.row(0, named=True)[s]) for s in TURBOFAN.sensor_names}
                if machine_id == "LT0"
                else {
                    "speed_rpm": 1500.0,
                    "valve_pct": 40.0,
                    "flow_m3h": 100.0,
                    "discharge_bar": 5.0,
                    "motor_a": 60.0,
                    "bearing_c": 40.0,
                    "vibration": 2.0,
                }
            )
            reading = {
                "machine_id": machine_id,
                "ts": datetime.now(UTC).isoformat(),
                "seq": seq + 1,
                "values": values,
            }
            intake.submit(intake.authenticate(tokens[machine_id]), [reading])
        report = processor.run_once()
        intake.close()
        assert report.written == 2 and report.scored == 1
        with platform.db.session() as s:
            after = {
                m: n for m, n in s.query(Prediction.machine_id, func.count()).group_by(Prediction.machine_id)
            }
        assert after["LP000"] == before["LP000"] + 1 and after["LT0"] == before["LT0"]
        assert platform.db.audit_entries(action="scoring_failed")[0]["detail"]["machine_type"] == "turbofan"
    finally:
        platform.close()


@pytest.mark.heavy
@pytest.mark.slow
def test_backtest_counts_a_timed_type_in_hours(tmp_path: Path) -> None:
    """`pitstop backtest --machine-type pump`: lives, lead and intervals in hours of operation."""
    fleet = tmp_path / "pumps.toml"
    fleet.write_text(pumpfleet.FLEET_TOML)
    data = str(tmp_path / "data")
    assert CliRunner().invoke(cli, ["fleet", "apply", str(fleet), "--data-dir", data]).exit_code == 0
    readings, events = pumpfleet.write(tmp_path / "history", pumpfleet.simulate(10, 2500, seed=4))
    for args in (
        ["import", "readings", str(readings), "--machine-type", "pump"],
        ["import", "events", str(events)],
    ):
        assert CliRunner().invoke(cli, [*args, "--data-dir", data]).exit_code == 0
    result = CliRunner().invoke(
        cli, ["backtest", "--data-dir", data, "--machine-type", "pump", "--folds", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["unit"] == "3600 s" and report["lead_time"] == 24  # the fleet file's policy, in hours
    policy, rtf, fixed = report["strategies"]
    assert rtf["failures"] == report["failures"] > 0
    assert rtf["readings"] > 1000  # hours operated, not readings
    assert fixed["interval"] is not None and 0 < fixed["interval"] <= rtf["readings"]
    assert policy["caught"] + policy["missed"] == policy["failures"]


def test_an_optional_sensor_missing_from_the_first_reading_of_a_batch_is_accepted(tmp_path: Path) -> None:
    """Arrow takes a batch's columns from its first reading: an optional sensor that only later
    readings carry must not be lost nor fail the request (it used to raise: a 500)."""
    fleet = parse_fleet(pumpfleet.FLEET_TOML)
    platform = Platform.open(make_settings(tmp_path / "data", intake_workers=0), fleet=fleet)
    try:
        with platform.db.session() as s:
            now = datetime.now(UTC)
            s.add(
                Machine(
                    machine_id="P1", machine_type="pump", status="active", installed_at=now, created_at=now
                )
            )
        _, token = DeviceRegistry(platform.db).add("P1")
        intake = Intake(platform)
        values = {"speed_rpm": 1500.0, "valve_pct": 40.0, "flow_m3h": 100.0, "discharge_bar": 5.0}
        values |= {"motor_a": 60.0, "bearing_c": 40.0, "vibration": 2.0}
        start = datetime.now(UTC) - timedelta(hours=3)
        batch = [
            {"machine_id": "P1", "ts": (start + timedelta(hours=i)).isoformat(), "seq": i + 1, "values": v}
            for i, v in enumerate([values, {**values, "seal_leak": 1.5}, values])
        ]
        body = json.dumps(batch).encode()  # through the body path, as HTTP takes it (the fast one)
        result = intake.submit_body(intake.authenticate(token), body, "application/json")
        assert (result.accepted, result.quarantined) == (3, 0)
        intake.close()
        (message,) = platform.bus.read("check", 10)
        table = decode_table(message.payload)
        assert table.column("seal_leak").to_pylist() == [None, 1.5, None]
    finally:
        platform.close()


def test_windows_by_duration_are_declared_in_the_fleet_file() -> None:
    text = pumpfleet.FLEET_TOML + (
        '[machine_types.pump.features]\nwindows = [10, "12h", "2d"]\nstats = ["mean", "slope"]\n'
        "duration_max_readings = 64\n"
    )
    spec = parse_fleet(text).type_of("pump").feature_spec
    assert spec.windows == (10,) and spec.durations == ("12h", "2d") and spec.duration_max_readings == 64
    assert "vibration__slope_2d" in spec.names and spec.max_window == 64
    with pytest.raises(FleetError, match="'1 fortnight' is not a duration"):
        parse_fleet(text.replace('"2d"', '"1 fortnight"'))


def test_a_fleet_files_manuals_are_checked_and_searched_by_the_assistant(tmp_path: Path) -> None:
    fleet = tmp_path / "pumps.toml"
    fleet.write_text(
        pumpfleet.FLEET_TOML.replace(
            'description = "centrifugal pump"',
            'description = "centrifugal pump"\nmanuals = ["pump-manual.md"]',
            1,
        )
    )
    missing = CliRunner().invoke(cli, ["fleet", "check", str(fleet)])
    assert missing.exit_code == 2 and "pump.manuals (pump-manual.md): no such file" in missing.output
    (tmp_path / "pump-manual.md").write_text(
        "# Pump manual\n\n## Mechanical seal replacement (PM-3)\n\nIsolate the pump, drain the casing, "
        "withdraw the rotating assembly and fit the new cartridge seal; run in for two hours.\n"
    )
    data = str(tmp_path / "data")
    applied = CliRunner().invoke(cli, ["fleet", "apply", str(fleet), "--data-dir", data])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.output.strip().splitlines()[-1])["manuals"] == ["pump-manual.md"]
    answer = CliRunner().invoke(cli, ["ask", "how do I replace the mechanical seal?", "--data-dir", data])
    assert answer.exit_code == 0 and "pump-manual.md" in answer.output


@pytest.mark.slow
@pytest.mark.heavy  # a challenger shadowed from the same spec: test_retrain.py
def test_a_challenger_with_its_own_feature_spec_is_shadowed_from_its_own_features(tmp_path: Path) -> None:
    """Each training fits its own fill values (optional sensor) and regimes, so a challenger's
    spec differs from the champion's: the processor keeps its own online state and shadows it."""
    from pitstop.training.pipeline import register, train_on_lake

    fleet = parse_fleet(pumpfleet.FLEET_TOML)
    settings = make_settings(tmp_path / "data", intake_workers=0, deployment="shadow")
    platform = Platform.open(settings, fleet=fleet)
    try:
        _import(platform, pumpfleet.simulate(12, 2000, seed=2), tmp_path / "pumps")
        champion = train_and_register(platform, machine_type="pump")
        trained = train_on_lake(platform, machine_type="pump", exclude_machines=["P000", "P001", "P002"])
        challenger = register(platform, trained, alias="challenger")
        assert challenger.bundle.spec.hash != champion.bundle.spec.hash
        processor = Processor(platform)
        processor.bootstrap()
        lane = processor.lanes["pump"]
        assert lane.challenger_online is not None
        assert lane.challenger_online.spec.hash == challenger.bundle.spec.hash
        _, token = DeviceRegistry(platform.db).add("P003")
        intake = Intake(platform)
        seq = processor.state.last["P003"]
        start = datetime.now(UTC) - timedelta(hours=5)
        values = {"speed_rpm": 2400.0, "valve_pct": 70.0, "flow_m3h": 160.0, "discharge_bar": 12.0}
        values |= {"motor_a": 100.0, "bearing_c": 55.0, "vibration": 6.0}
        batch = [
            {
                "machine_id": "P003",
                "ts": (start + timedelta(hours=i)).isoformat(),
                "seq": seq + i + 1,
                "values": values,
            }
            for i in range(3)
        ]
        intake.submit(intake.authenticate(token), batch)
        intake.close()
        processor.run_once()
        with platform.db.session() as s:
            arms = {(arm, version) for arm, version in s.query(Prediction.arm, Prediction.model_version)}
        assert arms == {("champion", champion.version), ("shadow", challenger.version)}
    finally:
        platform.close()
