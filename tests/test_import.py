"""``pitstop import readings | events``: a fleet's history from CSV and Parquet, through the CLI,
into a real data dir (ops DB, Delta lake) under a temporary folder."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

from pitstop.cli import cli
from pitstop.config import load_settings
from pitstop.ingest import DeviceIdentity, DeviceRegistry, Intake, history_read
from pitstop.platform import Platform
from pitstop.schema import default_fleet
from pitstop.store import Machine, MachineState

TURBOFAN = default_fleet().type_of("turbofan")
T0 = datetime(2025, 3, 1, tzinfo=UTC)

# Two types sharing a sensor name (temp); pump declares components, vibration is optional.
FLEET = """
[machine_types.pump]
time_unit = "hours"

[[machine_types.pump.sensors]]
name = "pressure"
unit = "bar"
low = 0
high = 10

[[machine_types.pump.sensors]]
name = "temp"
unit = "C"
low = -20
high = 120

[[machine_types.pump.sensors]]
name = "vibration"
unit = "mm/s"
low = 0
high = 50
required = false

[[machine_types.pump.components]]
name = "seal"
sensors = ["pressure"]

[[machine_types.pump.components]]
name = "bearing"
sensors = ["vibration"]

[machine_types.fan]
time_unit = "hours"

[[machine_types.fan.sensors]]
name = "rpm"
unit = "1/min"
low = 0
high = 5000

[[machine_types.fan.sensors]]
name = "temp"
unit = "C"
low = -20
high = 120
"""


def _apply_fleet(data_dir: Path, toml_text: str) -> None:
    """Make ``toml_text`` the fleet of the deployment in ``data_dir`` (``pitstop fleet apply``)."""
    path = data_dir.parent / "fleet.toml"
    path.write_text(toml_text)
    result = CliRunner().invoke(cli, ["fleet", "apply", str(path), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["import", *args])


def _summary(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rejects(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False).with_columns(pl.col("row").cast(pl.Int64))


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _engine(machine_id: str, hour: int, **values: Any) -> dict[str, Any]:
    """A turbofan reading with every sensor mid-range (``values`` override)."""
    row: dict[str, Any] = {"machine_id": machine_id, "ts": _iso(T0 + timedelta(hours=hour))}
    row.update({s.name: (s.low + s.high) / 2 for s in TURBOFAN.sensors})
    row.update(values)
    return row


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Any]:
    """Open the data dir after a CLI run, to look at what it stored."""
    platforms: list[Platform] = []

    def open_(data_dir: Path) -> Platform:
        platforms.append(Platform.open(load_settings(None, data_dir=data_dir, intake_workers=0)))
        return platforms[-1]

    yield open_
    for p in platforms:
        p.close()


def test_bad_rows_are_rejected_with_their_codes_and_nothing_bad_is_stored(
    tmp_path: Path, opened: Any
) -> None:
    data = tmp_path / "data"
    rows = [_engine("eng-1", h) for h in range(4)]
    rows[3]["ts"] = "2025-03-01T05:00:00+02:00"  # T0 + 3 h, with an offset
    bad = [
        _engine("eng-1", 10) | {"ts": "2025-03-02T10:00:00"},  # no zone
        _engine("eng-1", 11) | {"ts": "yesterday"},
        _engine("eng-1", 12) | {"ts": _iso(datetime.now(UTC) + timedelta(days=1))},
        _engine("eng-1", 13, s2="warm"),
        _engine("eng-1", 14, s3="NaN"),
        _engine("eng-1", 15, s4=""),
        _engine("eng 1", 16),
    ]
    held = _engine("eng-1", 20, s2=9999.0)  # out of range: quarantined, not rejected
    path = _write_csv(tmp_path / "history.csv", [*rows, *bad, held, rows[1]])

    summary = _summary(_run("readings", str(path), "--data-dir", str(data)))

    assert [v["machine_type"] for v in summary.pop("validation")] == ["turbofan"]  # see test_validation
    assert summary | {"seconds": 0, "rows_per_s": 0} == {
        "rows": 13,
        "stored": 4,
        "quarantined": 1,
        "duplicates": 1,
        "rejected": 7,
        "machines": 1,
        "seconds": 0,
        "rows_per_s": 0,
        "rejects_file": str(path) + ".rejects.csv",
    }
    rejects = _rejects(Path(summary["rejects_file"]))
    assert list(rejects.columns) == [*rows[0], "row", "code", "reason"]
    assert dict(zip(rejects["row"], rejects["code"], strict=True)) == {
        5: "naive_timestamp",
        6: "invalid_timestamp",
        7: "future_timestamp",
        8: "invalid_value",
        9: "non_finite",
        10: "missing_sensor",
        11: "invalid_machine_id",
    }
    assert rejects.filter(pl.col("row") == 8)["s2"].item() == "warm"  # the original text
    assert rejects.filter(pl.col("row") == 8)["reason"].item() == "not a number: s2"
    p = opened(data)
    telemetry = p.lake.read("telemetry").sort("seq")
    assert telemetry["ts"].to_list() == [T0 + timedelta(hours=h) for h in range(4)]
    quarantine = p.lake.read("quarantine")
    assert quarantine["reason"].to_list() == ["s2=9999 outside [500, 700] °R"]  # intake's words
    assert sorted([*telemetry["seq"], *quarantine["seq"]]) == [1, 2, 3, 4, 5]
    assert telemetry["bus_position"].null_count() == 4
    assert telemetry["day"].to_list() == [T0.date()] * 4
    audit = p.db.audit_entries(action="readings_imported")
    assert audit[0]["detail"]["stored"] == 4 and audit[0]["detail"]["rejected"] == 7


def test_importing_the_same_file_twice_stores_nothing_twice(tmp_path: Path, opened: Any) -> None:
    data = tmp_path / "data"
    rows = [_engine(f"eng-{m}", h) for m in range(3) for h in range(5)]
    path = _write_csv(tmp_path / "history.csv", [*rows, _engine("eng-0", 9, s2=9999.0)])

    first = _summary(_run("readings", str(path), "--data-dir", str(data)))
    again = _summary(_run("readings", str(path), "--data-dir", str(data)))

    assert (first["stored"], first["quarantined"], first["duplicates"]) == (15, 1, 0)
    assert (again["stored"], again["quarantined"], again["duplicates"], again["rejected"]) == (0, 0, 16, 0)
    assert again["rejects_file"] is None
    p = opened(data)
    assert p.lake.read("telemetry").height == 15
    assert p.lake.read("quarantine").height == 1


def test_older_readings_than_the_stored_history_are_rejected(tmp_path: Path, opened: Any) -> None:
    data = tmp_path / "data"
    later = _write_csv(tmp_path / "later.csv", [_engine("eng-1", h) for h in range(10, 13)])
    earlier = _write_csv(tmp_path / "earlier.csv", [_engine("eng-1", h) for h in (5, 11, 14)])
    _summary(_run("readings", str(later), "--data-dir", str(data)))

    summary = _summary(
        _run("readings", str(earlier), "--data-dir", str(data), "--rejects", str(tmp_path / "r.csv"))
    )

    assert (summary["stored"], summary["duplicates"], summary["rejected"]) == (1, 1, 1)
    rejects = _rejects(tmp_path / "r.csv")
    assert rejects.select("row", "code", "ts").rows() == [
        (1, "before_stored_history", _iso(T0 + timedelta(hours=5)))
    ]
    assert opened(data).lake.read("telemetry").sort("ts")["seq"].to_list() == [1, 2, 3, 4]


def test_parquet_is_imported_like_csv(tmp_path: Path, opened: Any) -> None:
    data = tmp_path / "data"
    frame = pl.DataFrame([_engine("eng-7", h) for h in range(6)]).with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC")
    )
    frame = pl.concat([frame, frame.head(1).with_columns(pl.lit(float("inf")).alias("s5"))])
    path = tmp_path / "history.parquet"
    frame.write_parquet(path)

    summary = _summary(_run("readings", str(path), "--data-dir", str(data)))

    assert (summary["stored"], summary["duplicates"], summary["rejected"]) == (6, 0, 1)
    assert _rejects(Path(summary["rejects_file"]))["code"].to_list() == ["non_finite"]
    assert opened(data).lake.read("telemetry").height == 6


def test_whole_file_problems_exit_2_and_store_nothing(tmp_path: Path, opened: Any) -> None:
    data = tmp_path / "data"
    good = _engine("eng-1", 0)
    cases = {
        "unknown_sensor": _write_csv(tmp_path / "extra.csv", [good | {"s99": 1}]),
        "missing_column": _write_csv(tmp_path / "nots.csv", [{k: v for k, v in good.items() if k != "ts"}]),
        "unreadable_file": tmp_path / "absent.csv",
        "unsupported_format": _write_csv(tmp_path / "history.txt", [good]),
    }
    for code, path in cases.items():
        result = _run("readings", str(path), "--data-dir", str(data))
        assert result.exit_code == 2, (code, result.output)
        assert f"error [{code}]:" in result.stderr
    result = _run("readings", str(cases["unknown_sensor"]), "--data-dir", str(data), "--machine-type", "pump")
    assert result.exit_code == 2 and "error [unknown_machine_type]:" in result.stderr
    assert opened(data).lake.read("telemetry").height == 0


def test_live_readings_continue_after_the_imported_seqs(tmp_path: Path, opened: Any) -> None:
    data = tmp_path / "data"
    path = _write_csv(tmp_path / "history.csv", [_engine("eng-5", h) for h in range(8)])
    _summary(_run("readings", str(path), "--data-dir", str(data)))

    p = opened(data)
    with p.db.session() as s:
        machine, state = s.get(Machine, "eng-5"), s.get(MachineState, "eng-5")
        assert machine is not None and state is not None
        assert (machine.machine_type, machine.status, machine.installed_at) == ("turbofan", "active", T0)
        assert (state.last_seq, state.last_ts) == (8, T0 + timedelta(hours=7))
    device_id, _ = DeviceRegistry(p.db).add("eng-5")
    intake = Intake(p)
    values = {k: v for k, v in _engine("eng-5", 0).items() if k not in ("machine_id", "ts")}
    now = _iso(datetime.now(UTC))
    identity = DeviceIdentity(device_id, "eng-5", "turbofan")
    resent = intake.submit(identity, [{"machine_id": "eng-5", "ts": now, "seq": 8, "values": values}])
    live = intake.submit(identity, [{"machine_id": "eng-5", "ts": now, "seq": 9, "values": values}])
    assert (resent.accepted, resent.duplicates) == (0, 1)  # seq 8 is taken by the import
    assert (live.accepted, live.duplicates) == (1, 0)


def test_rows_are_numbered_across_chunks(
    tmp_path: Path, opened: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_read, "CHUNK_BYTES", 700)  # about three rows per chunk
    data = tmp_path / "data"
    rows = [_engine("eng-2", h) for h in range(20)]
    rows[16]["s7"] = "broken"
    rows[3]["ts"] = "not a time"
    path = _write_csv(tmp_path / "history.csv", rows)

    summary = _summary(_run("readings", str(path), "--data-dir", str(data)))

    assert (summary["stored"], summary["rejected"]) == (18, 2)
    rejects = _rejects(Path(summary["rejects_file"]))
    assert rejects.select("row", "code").rows() == [(4, "invalid_timestamp"), (17, "invalid_value")]
    assert rejects["s7"].to_list()[1] == "broken"
    assert opened(data).lake.read("telemetry").sort("ts")["seq"].to_list() == list(range(1, 19))


def test_a_machine_type_column_picks_each_rows_type(tmp_path: Path, opened: Any) -> None:
    data = tmp_path / "data"
    _apply_fleet(data, FLEET)
    rows = [
        {"machine_id": "p-1", "machine_type": "pump", "ts": _iso(T0), "pressure": 5, "temp": 40, "rpm": ""},
        {"machine_id": "f-1", "machine_type": "fan", "ts": _iso(T0), "pressure": "", "temp": 30, "rpm": 900},
        {"machine_id": "f-2", "machine_type": "fan", "ts": _iso(T0), "pressure": 3, "temp": 30, "rpm": 900},
        {"machine_id": "x-1", "machine_type": "drill", "ts": _iso(T0), "pressure": 1, "temp": 1, "rpm": ""},
        {
            "machine_id": "p-1",
            "machine_type": "fan",
            "ts": _iso(T0 + timedelta(hours=1)),
            "temp": 1,
            "rpm": 1,
        },
        {"machine_id": "p-1", "machine_type": "pump", "ts": _iso(T0 + timedelta(hours=2)), "pressure": 1},
        {
            "machine_id": "f-1",
            "machine_type": "fan",
            "ts": _iso(T0 + timedelta(hours=1)),
            "temp": 200,
            "rpm": 1,
        },
    ]
    path = _write_csv(
        tmp_path / "mixed.csv", rows, ["machine_id", "machine_type", "ts", "pressure", "temp", "rpm"]
    )

    summary = _summary(_run("readings", str(path), "--data-dir", str(data)))

    assert (summary["stored"], summary["quarantined"], summary["rejected"], summary["machines"]) == (
        2,
        1,
        4,
        2,
    )
    rejects = _rejects(Path(summary["rejects_file"]))
    assert rejects.select("row", "code").rows() == [
        (3, "unknown_sensor"),
        (4, "unknown_machine_type"),
        (5, "wrong_machine_type"),
        (6, "missing_sensor"),
    ]
    assert rejects["reason"].to_list()[0] == "not sensors of machine type fan: pressure"
    p = opened(data)
    with p.db.session() as s:
        assert {m.machine_id: m.machine_type for m in s.query(Machine)} == {"p-1": "pump", "f-1": "fan"}
    # a machine registered as a fan stays one
    again = _write_csv(
        tmp_path / "again.csv",
        [{"machine_id": "f-1", "ts": _iso(T0 + timedelta(hours=5)), "pressure": 1, "temp": 1}],
    )
    result = _summary(_run("readings", str(again), "--data-dir", str(data), "--machine-type", "pump"))
    assert _rejects(Path(result["rejects_file"]))["code"].to_list() == ["wrong_machine_type"]
    # with two types and neither a column nor --machine-type, the file is refused whole
    result = _run("readings", str(again), "--data-dir", str(data))
    assert result.exit_code == 2 and "error [machine_type_required]:" in result.stderr


def test_events_import_checks_kind_machine_and_component(tmp_path: Path, opened: Any) -> None:
    data = tmp_path / "data"
    _apply_fleet(data, FLEET)
    readings = [
        {"machine_id": "p-1", "ts": _iso(T0 + timedelta(hours=h)), "pressure": 5, "temp": 40}
        for h in range(3)
    ]
    _summary(
        _run(
            "readings",
            str(_write_csv(tmp_path / "r.csv", readings)),
            "--machine-type",
            "pump",
            "--data-dir",
            str(data),
        )
    )
    events = [
        {
            "machine_id": "p-1",
            "ts": _iso(T0 + timedelta(hours=2)),
            "kind": "failure",
            "component": "seal",
            "detail": "leak",
        },
        {
            "machine_id": "p-1",
            "ts": _iso(T0 + timedelta(hours=1)),
            "kind": "inspection",
            "component": "",
            "detail": "",
        },
        {
            "machine_id": "p-1",
            "ts": _iso(T0 + timedelta(hours=2)),
            "kind": "failure",
            "component": "seal",
            "detail": "x",
        },
        {"machine_id": "p-9", "ts": _iso(T0), "kind": "failure", "component": "", "detail": ""},
        {"machine_id": "p-1", "ts": _iso(T0), "kind": "explosion", "component": "", "detail": ""},
        {"machine_id": "p-1", "ts": _iso(T0), "kind": "maintenance", "component": "impeller", "detail": ""},
        {
            "machine_id": "p-1",
            "ts": "2025-03-01 00:00:00",
            "kind": "maintenance",
            "component": "",
            "detail": "",
        },
    ]
    path = _write_csv(tmp_path / "events.csv", events)

    summary = _summary(_run("events", str(path), "--data-dir", str(data)))
    again = _summary(_run("events", str(path), "--data-dir", str(data)))

    assert {k: summary[k] for k in ("rows", "stored", "duplicates", "rejected")} == {
        "rows": 7,
        "stored": 2,
        "duplicates": 1,
        "rejected": 4,
    }
    assert (again["stored"], again["duplicates"], again["rejected"]) == (0, 3, 4)
    rejects = _rejects(Path(summary["rejects_file"]))
    assert rejects.select("row", "code").rows() == [
        (4, "unknown_machine"),
        (5, "invalid_kind"),
        (6, "unknown_component"),
        (7, "naive_timestamp"),
    ]
    stored = opened(data).lake.read("events").sort("ts")
    assert stored.select("kind", "detail").rows() == [("inspection", None), ("failure", "leak")]
    assert stored["seq"].null_count() == 2
    if "component" in stored.columns:
        assert stored["component"].to_list() == [None, "seal"]
