from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from pitstop.errors import LakeError
from pitstop.lake import Lake


def _rows(machine: str, seqs: list[int]) -> pa.Table:
    ts = pa.array([datetime(2026, 5, 1, tzinfo=UTC)] * len(seqs), pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "machine_id": [machine] * len(seqs),
            "ts": ts,
            "seq": pa.array(seqs, pa.int64()),
            "day": ts.cast(pa.date32()),
            "bus_position": pa.array([None] * len(seqs), pa.int64()),
            "a": pa.array([float(s) for s in seqs]),
        }
    )


def test_idempotent_append_and_time_travel(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", ["a", "b"])
    lake.ensure()
    v0 = lake.version()
    assert lake.append(
        "telemetry",
        _rows("m1", [1, 2, 3]).append_column("b", pa.nulls(3, pa.float64())),
        app_id="proc",
        position=7,
    )
    # the same bus position again (a replay after a crash) is skipped
    assert not lake.append(
        "telemetry",
        _rows("m1", [1, 2, 3]).append_column("b", pa.nulls(3, pa.float64())),
        app_id="proc",
        position=7,
    )
    assert lake.committed_position("proc") == 7
    assert lake.append(
        "telemetry", _rows("m2", [1]).append_column("b", pa.nulls(1, pa.float64())), app_id="proc", position=9
    )
    assert lake.count("telemetry") == 4
    assert lake.count("telemetry", version=v0 + 1) == 3  # time travel
    assert lake.read("telemetry", machine_ids=["m2"]).height == 1
    with pytest.raises(LakeError):
        lake.table("nope")
