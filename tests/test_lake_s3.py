"""The lake on S3-compatible storage (moto_server): the same tables, upkeep, and safe concurrent writers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pyarrow as pa
import pytest

from pitstop.cluster.s3 import create_bucket
from pitstop.config import load_settings
from pitstop.errors import ConfigError, LakeError
from pitstop.lake import Lake, LakeLocation
from pitstop.lake.location import s3_options
from pitstop.lake.upkeep import LakeUpkeep, UpkeepPolicy, _last_checkpoint


def _bucket(endpoint: str) -> str:
    name = f"lake-{uuid4().hex[:10]}"
    create_bucket(endpoint, name)
    return name


def _rows(machine: str, seqs: list[int]) -> pa.Table:
    ts = pa.array([datetime(2026, 5, 1, tzinfo=UTC)] * len(seqs), pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "machine_id": [machine] * len(seqs),
            "ts": ts,
            "seq": pa.array(seqs, pa.int64()),
            "day": ts.cast(pa.date32()),
            "bus_position": pa.array(seqs, pa.int64()),
            "a": pa.array([float(s) for s in seqs]),
        }
    )


def test_an_s3_lake_gets_conditional_puts_unless_the_options_choose_a_commit_method() -> None:
    assert s3_options({})["conditional_put"] == "etag"
    dynamo = s3_options({"AWS_S3_LOCKING_PROVIDER": "dynamodb"})
    assert "conditional_put" not in dynamo
    assert s3_options({}, "http://minio:9000") == {
        "conditional_put": "etag",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_ALLOW_HTTP": "true",
    }
    assert "AWS_ALLOW_HTTP" not in s3_options({}, "https://s3.example.org")
    assert LakeLocation.of("s3://b/lake/").join("telemetry") == "s3://b/lake/telemetry"
    local = LakeLocation.of("file:///tmp/x")
    assert local.is_local and local.storage_options is None


def test_an_endpoint_without_a_scheme_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http://host:port"):
        load_settings(None, data_dir=tmp_path, s3_endpoint_url="minio:9000")
    assert load_settings(None, data_dir=tmp_path, s3_endpoint_url="http://minio:9000/").s3_endpoint_url == (
        "http://minio:9000"
    )


def test_a_lake_in_a_missing_bucket_is_one_clear_error(s3_endpoint: str) -> None:
    with pytest.raises(LakeError, match="bucket exists") as caught:
        Lake(LakeLocation.of("s3://no-such-bucket/lake", {}, s3_endpoint), ["a"]).ensure()
    assert caught.value.code == "lake_unreachable"


def test_lake_tables_on_s3_append_time_travel_and_upkeep(s3_endpoint: str) -> None:
    location = LakeLocation.of(f"s3://{_bucket(s3_endpoint)}/pitstop/lake", {}, s3_endpoint)
    assert not location.exists()
    lake = Lake(location, ["a"])
    lake.ensure()
    assert location.exists()
    upkeep = LakeUpkeep(lake, lambda: {}, UpkeepPolicy(retention_hours=0))
    upkeep.protect()
    for position in range(1, 6):
        assert lake.append("telemetry", _rows("m1", [position]), app_id="proc", position=position)
    assert not lake.append("telemetry", _rows("m1", [5]), app_id="proc", position=5)  # a replay
    assert lake.committed_position("proc") == 5
    assert lake.count("telemetry") == 5
    assert lake.count("telemetry", version=lake.version() - 2) == 3  # time travel
    assert lake.add_sensors(["b"]) == ["b"]
    assert "b" in lake.columns("telemetry")

    report = {t.table: t for t in upkeep.run_once().tables}["telemetry"]
    assert report.files_before == 5 and report.files_after == 1
    assert report.checkpoint is not None
    assert report.files_on_disk == 1  # the five small files vacuumed (retention 0, nothing pinned)
    assert report.vacuumed == 5
    assert lake.read("telemetry")["seq"].sort().to_list() == [1, 2, 3, 4, 5]
    assert _last_checkpoint(location, "telemetry") == report.checkpoint  # read back from S3
    assert report.log_files == len(location.files("telemetry", "_delta_log")) > 0


WRITER = """
import sys, time
from datetime import UTC, datetime
import pyarrow as pa
from pitstop.config import load_settings
from pitstop.errors import ConfigError, LakeError
from pitstop.lake import Lake

uri, writer, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lake = Lake(uri, ["a"])
lake.version("events")  # the table open: from here on, only the appends race
import os
open(go + "." + writer, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)

def rows(position):
    return pa.table({
        "machine_id": [writer], "ts": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
        "seq": pa.array([position], pa.int64()), "kind": ["inspection"], "detail": [None],
        "component": [None],
    })

for position in range(1, count + 1):
    for attempt in range(20):  # a commit that lost too many races is retried, as the processor would
        try:
            lake.append("events", rows(position), app_id=writer, position=position)
            break
        except LakeError as exc:
            print("retry", position, exc, file=sys.stderr)
            time.sleep(0.05)
    else:
        raise SystemExit(f"{writer}: position {position} never committed")
print("resend", lake.append("events", rows(count), app_id=writer, position=count))
"""


def _concurrent_appends(tmp_path: Path, endpoint: str, uri: str, writers: int, count: int, env: dict) -> list:
    Lake(LakeLocation.of(uri, {}, endpoint), ["a"]).ensure()
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, f"w{i}", str(count), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "AWS_ENDPOINT_URL": endpoint, **env},
        )
        for i in range(writers)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"go.w{i}").exists() for i in range(writers)):  # all ready, then go at once
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
        time.sleep(0.05)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


def test_concurrent_writer_processes_on_s3_lose_no_commit_and_write_each_position_once(
    tmp_path: Path, s3_endpoint: str
) -> None:
    writers, count = 4, 6
    uri = f"s3://{_bucket(s3_endpoint)}/lake"
    results = _concurrent_appends(tmp_path, s3_endpoint, uri, writers, count, {})
    for rc, out, err in results:
        assert rc == 0, err
        assert out.strip().endswith("resend False")  # a re-sent last position writes nothing

    lake = Lake(LakeLocation.of(uri, {}, s3_endpoint), ["a"])
    events = lake.read("events")
    pairs = sorted(zip(events["machine_id"].to_list(), events["seq"].to_list(), strict=True))
    assert pairs == sorted((f"w{i}", p) for i in range(writers) for p in range(1, count + 1))
    # one commit per append, none lost or overwritten: versions 0..N, contiguous
    assert lake.version("events") == writers * count
    assert sorted(h["version"] for h in lake.history("events")) == list(range(writers * count + 1))
    for i in range(writers):
        assert lake.committed_position(f"w{i}", "events") == count
