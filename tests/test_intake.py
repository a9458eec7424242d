"""Device registry (API and CLI), NDJSON, rate limits, quarantine and lake operations."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from pitstop.cli import cli
from pitstop.config import load_settings
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.web import create_app
from pitstop.web.users import Users
from tests.conftest import admin_headers
from tests.test_api import assert_error, post, readings


@pytest.fixture
def app_client(trained: Platform) -> Iterator[tuple[TestClient, Processor]]:
    proc = Processor(trained)
    proc.bootstrap()
    with TestClient(create_app(trained, proc), headers=admin_headers(trained)) as client:
        yield client, proc


def admin(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.admin_token()}"}


def test_admin_device_lifecycle(trained: Platform, app_client: tuple[TestClient, Processor]) -> None:
    client, _ = app_client
    assert_error(client.get("/api/v1/admin/devices", headers={"Authorization": ""}), 401, "not_authenticated")
    assert_error(
        client.get("/api/v1/admin/devices", headers={"Authorization": "Bearer nope"}),
        401,
        "not_authenticated",
    )
    users = Users(trained.db)
    users.add("eve", "engineer")
    engineer = {"Authorization": f"Bearer {users.create_key('eve')}"}
    assert_error(client.get("/api/v1/admin/devices", headers=engineer), 403, "forbidden")
    assert (trained.settings.data_dir / "admin-token").stat().st_mode & 0o777 == 0o600

    created = client.post(
        "/api/v1/admin/devices",
        json={"machine_id": "harv-1", "machine_type": "turbofan"},
        headers=admin(trained),
    )
    assert created.status_code == 201
    device_id, token = created.json()["device_id"], created.json()["token"]
    assert_error(
        client.post("/api/v1/admin/devices", json={"machine_id": "harv-2"}, headers=admin(trained)),
        404,
        "machine_not_found",
    )
    assert_error(
        client.post(
            "/api/v1/admin/devices",
            json={"machine_id": "harv-2", "machine_type": "tractor"},
            headers=admin(trained),
        ),
        422,
        "unknown_machine_type",
    )
    listed = client.get("/api/v1/admin/devices", headers=admin(trained)).json()["devices"]
    assert {"device_id": device_id, "machine_id": "harv-1", "status": "active"}.items() <= listed[-1].items()

    batch = readings("harv-1", 5, 0, 3)
    assert post(client, token, batch).status_code == 202

    rotated = client.post(f"/api/v1/admin/devices/{device_id}/rotate", headers=admin(trained)).json()["token"]
    assert_error(
        post(client, token, readings("harv-1", 5, 3, 1)), 401, "invalid_token"
    )  # old token: gone at once
    assert post(client, rotated, readings("harv-1", 5, 3, 1)).status_code == 202

    assert (
        client.post(f"/api/v1/admin/devices/{device_id}/disable", headers=admin(trained)).status_code == 200
    )
    assert_error(post(client, rotated, readings("harv-1", 5, 4, 1)), 401, "device_disabled")
    assert_error(
        client.post("/api/v1/admin/devices/9999/disable", headers=admin(trained)), 404, "device_not_found"
    )


def test_devices_cli(trained: Platform) -> None:
    run = CliRunner().invoke
    data = ["--data-dir", str(trained.settings.data_dir)]
    out = run(cli, ["devices", "add", "harv-9", "--machine-type", "turbofan", *data])
    assert out.exit_code == 0, out.output
    device = json.loads(out.output)
    assert device["token"].startswith("pst_") and device["token"] not in (
        trained.settings.data_dir / "ops.db"
    ).read_bytes().decode("latin-1")
    assert "harv-9" in run(cli, ["devices", "list", *data]).output
    rotated = json.loads(run(cli, ["devices", "rotate", str(device["device_id"]), *data]).output)
    assert rotated["token"] != device["token"]
    assert run(cli, ["devices", "disable", str(device["device_id"]), *data]).exit_code == 0
    missing = run(cli, ["devices", "add", "harv-10", *data])
    assert missing.exit_code == 2 and "machine_not_found" in missing.output


def test_ndjson_and_quarantine(
    trained: Platform, app_client: tuple[TestClient, Processor], tokens: dict[str, str]
) -> None:
    client, proc = app_client
    batch = readings("eng-004", 4, 0, 5)
    batch[2]["values"]["s3"] = 5000.0  # out of range: accepted into quarantine
    body = b"\n".join(orjson.dumps(r) for r in batch) + b"\n"
    r = post(client, tokens["eng-004"], body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["quarantined"]) == (4, 1)
    proc.run_once()
    assert trained.lake.read("telemetry", machine_ids=["eng-004"]).height == 4
    held = trained.lake.read("quarantine", machine_ids=["eng-004"])
    assert held["seq"].to_list() == [batch[2]["seq"]] and "s3=5000" in held["reason"][0]

    data = ["--data-dir", str(trained.settings.data_dir)]
    listed = CliRunner().invoke(cli, ["quarantine", "list", *data])
    assert "eng-004" in listed.output and "s3=5000" in listed.output
    assert (
        CliRunner().invoke(cli, ["quarantine", "release", *data]).exit_code == 2
    )  # needs --machine or --all
    released = CliRunner().invoke(cli, ["quarantine", "release", "--machine", "eng-004", *data])
    assert "released 1" in released.output
    assert trained.lake.read("telemetry", machine_ids=["eng-004"]).height == 5
    assert trained.lake.read("quarantine", machine_ids=["eng-004"]).height == 0


def test_rate_limit(trained: Platform) -> None:
    limited = Platform.open(
        load_settings(None, data_dir=trained.settings.data_dir, device_rate_limit=1, device_rate_burst=2)
    )
    try:
        proc = Processor(limited)
        proc.bootstrap()
        tokens = json.loads((trained.settings.data_dir / "demo-devices.json").read_text())
        with TestClient(create_app(limited, proc), headers=admin_headers(limited)) as client:
            statuses = [
                post(client, tokens["eng-005"], readings("eng-005", 5, i, 1)).status_code for i in range(3)
            ]
            assert statuses == [202, 202, 429]
            r = post(client, tokens["eng-005"], readings("eng-005", 5, 3, 1))
            assert_error(r, 429, "rate_limited")
            assert int(r.headers["Retry-After"]) >= 1
            assert (
                post(client, tokens["eng-006"], readings("eng-006", 6, 0, 1)).status_code == 202
            )  # per device
    finally:
        limited.close()


def test_lake_versions_compact_and_time_travel(trained: Platform) -> None:
    lake = trained.lake
    before = lake.version()
    rows_before = lake.count("telemetry")
    time.sleep(0.05)
    moment = datetime.now(UTC)
    time.sleep(0.05)
    frame = lake.read("telemetry", machine_ids=["hist-001"]).head(3)
    lake.append("telemetry", frame.with_columns(frame["machine_id"].str.replace("hist", "copy")).to_arrow())
    assert lake.count("telemetry") == rows_before + 3
    assert lake.read("telemetry", version=before).height == rows_before
    assert lake.read("telemetry", as_of=moment).height == rows_before
    data = ["--data-dir", str(trained.settings.data_dir)]
    versions = CliRunner().invoke(cli, ["lake", "versions", *data]).output
    assert f"v{before + 1}" in versions and "WRITE" in versions
    compacted = json.loads(CliRunner().invoke(cli, ["lake", "compact", *data]).output)
    assert compacted["numFilesRemoved"] >= 1
    assert lake.count("telemetry") == rows_before + 3
    dry = CliRunner().invoke(cli, ["lake", "vacuum", "--retention-hours", "0", *data]).output
    assert "would delete" in dry


@pytest.fixture
def tokens(trained: Platform) -> dict[str, str]:
    tokens: dict[str, str] = json.loads((trained.settings.data_dir / "demo-devices.json").read_text())
    return tokens


def test_fast_path_builds_the_same_batch_as_the_strict_path() -> None:
    from datetime import timedelta

    from pitstop.ingest.validate import may_hold_literals, validate_batch
    from pitstop.schema import TURBOFAN, default_fleet

    batch = readings("m-1", 7, 0, 40)
    batch[5]["values"]["s4"] = 2000.0  # quarantined either way
    del batch[9]["values"]["s1"]  # missing: the fast path must hand over to the strict one
    body = orjson.dumps(batch)
    assert not may_hold_literals(body) and may_hold_literals(b'{"a": true}') and may_hold_literals(b"[false]")
    kw = {
        "machine_id": "m-1",
        "last_seq": 3,
        "max_readings": 100,
        "horizon": datetime.now(UTC) + timedelta(minutes=5),
    }
    from pitstop.errors import ValidationError

    for check in (True, False):
        with pytest.raises(ValidationError) as err:
            validate_batch(orjson.loads(body), TURBOFAN, default_fleet().sensors, check_values=check, **kw)  # type: ignore[arg-type]
        assert err.value.details == [{"index": 9, "code": "missing_sensor", "message": "missing sensors: s1"}]
    del batch[9]
    # Timestamps in several RFC 3339 spellings (Arrow parses them on the fast path) and others
    # that only datetime.fromisoformat reads (the strict path): the same instants either way.
    batch[1]["ts"] = "2026-03-01T10:00:00.5+02:00"
    batch[2]["ts"] = "2026-03-01T08:00:00.500001Z"
    batch[3]["ts"] = "2026-03-01T08:00:00-05:30"
    spaced = [dict(r) for r in batch]
    spaced[4]["ts"] = "2026-03-01 08:00:00+00:00"
    from pitstop.ingest.validate import _fast

    fast_args = (TURBOFAN, default_fleet().sensors, "m-1", 3, 100, kw["horizon"])
    assert _fast(batch, *fast_args) is not None  # type: ignore[arg-type]
    assert _fast(spaced, *fast_args) is None  # type: ignore[arg-type]
    for variant in (batch, spaced):
        strict = validate_batch(variant, TURBOFAN, default_fleet().sensors, check_values=True, **kw)  # type: ignore[arg-type]
        fast = validate_batch(variant, TURBOFAN, default_fleet().sensors, check_values=False, **kw)  # type: ignore[arg-type]
        assert strict.table is not None and fast.table is not None
        arrival = ["received"]  # when intake received them: a clock reading, not the batch
        assert strict.table.drop_columns(arrival).equals(fast.table.drop_columns(arrival))
    # A null value is refused with its code on both paths (the fast one hands over on the null).
    nulled = [dict(r, values=dict(r["values"])) for r in batch]
    nulled[6]["values"]["s2"] = None
    for check in (True, False):
        with pytest.raises(ValidationError) as err:
            validate_batch(nulled, TURBOFAN, default_fleet().sensors, check_values=check, **kw)  # type: ignore[arg-type]
        assert [d["code"] for d in err.value.details] == ["invalid_value"]
    strict = validate_batch(batch, TURBOFAN, default_fleet().sensors, check_values=True, **kw)  # type: ignore[arg-type]
    fast = validate_batch(batch, TURBOFAN, default_fleet().sensors, check_values=False, **kw)  # type: ignore[arg-type]
    assert strict.table is not None and fast.table is not None
    assert strict.table.drop_columns(arrival).equals(fast.table.drop_columns(arrival))
    assert (
        (fast.accepted, fast.quarantined, fast.duplicates)
        == (strict.accepted, strict.quarantined, strict.duplicates)
        == (35, 1, 3)
    )


def test_validation_workers_answer_like_the_server_and_survive_a_dead_worker(
    trained: Platform, app_client: tuple[TestClient, Processor], tokens: dict[str, str]
) -> None:
    import os
    import signal

    client, proc = app_client
    workers = client.app.state.intake.workers  # type: ignore[attr-defined]
    assert workers is not None and workers.processes == trained.settings.intake_workers >= 1
    token = tokens["eng-006"]
    batch = readings("eng-006", 6, 0, 20)
    bad = [dict(r) for r in batch]
    bad[3]["seq"] = bad[2]["seq"]  # a code per reading comes back from the worker process
    err = assert_error(post(client, token, bad), 422, "invalid_readings")
    assert err["details"] == [
        {
            "index": 3,
            "code": "non_increasing_seq",
            "message": f"seq {bad[3]['seq']} does not increase on {bad[3]['seq']}",
        }
    ]
    assert post(client, token, batch[:10]).json()["accepted"] == 10

    pool = workers.start()
    for pid in list(pool._processes):  # a worker dies (OOM killer, a crash): the batch is refused
        os.kill(pid, signal.SIGKILL)
    refused = post(client, token, batch[10:])
    err = assert_error(refused, 503, "intake_unavailable")
    assert refused.headers["retry-after"] == "1"
    resent = post(client, token, batch[10:])  # a fresh pool takes the retry
    assert resent.status_code == 202 and resent.json()["accepted"] == 10
    proc.run_once()
    assert trained.lake.read("telemetry", machine_ids=["eng-006"])["seq"].to_list() == [
        r["seq"] for r in batch
    ]
